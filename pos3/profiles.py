"""Profiles: which endpoint and credentials a URL is read with, and where its cache lives."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Profile:
    """How to reach one storage service.

    ``endpoint`` and ``region`` map onto the backend's client configuration;
    ``None`` leaves the backend's standard configuration chain in charge
    (for S3: ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``, ``~/.aws``).
    ``public=True`` never signs a request, even with credentials present.
    ``local_name`` names the profile's directory under the cache root.
    ``options`` holds backend-specific settings (for S3: ``aws_profile``,
    ``access_key_id``, ``secret_access_key``, ``session_token``,
    ``addressing_style``); their values never appear in a repr.
    """

    local_name: str = "_"
    endpoint: str | None = None
    region: str | None = None
    public: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.local_name
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"Profile local_name must be a single path segment, got {name!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __hash__(self) -> int:
        return hash((self.local_name, self.endpoint, self.region, self.public, tuple(sorted(self.options))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Profile):
            return NotImplemented
        return (self.local_name, self.endpoint, self.region, self.public, dict(self.options)) == (
            other.local_name,
            other.endpoint,
            other.region,
            other.public,
            dict(other.options),
        )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}=***" for k in sorted(self.options))
        return (
            f"Profile(local_name={self.local_name!r}, endpoint={self.endpoint!r}, "
            f"region={self.region!r}, public={self.public!r}, options={{{opts}}})"
        )


DEFAULT = Profile()

_lock = threading.Lock()
_registered: dict[str, Profile] = {}


def register_profile(
    name: str,
    endpoint: str | None = None,
    region: str | None = None,
    public: bool = False,
    local_name: str | None = None,
    **options: Any,
) -> Profile:
    """Register a named profile; ``local_name`` defaults to ``name``.

    Registering a name again replaces it. Backend-specific settings are
    passed as keyword ``options`` (see `Profile`).
    """
    profile = Profile(local_name=local_name or name, endpoint=endpoint, region=region, public=public, options=options)
    with _lock:
        _registered[name] = profile
    return profile


def resolve(profile: str | Profile | None, default: str | Profile | None = None) -> Profile:
    """Turn a profile argument (name, object or ``None``) into a `Profile`."""
    chosen = profile if profile is not None else default
    if chosen is None:
        return DEFAULT
    if isinstance(chosen, Profile):
        return chosen
    with _lock:
        try:
            return _registered[chosen]
        except KeyError:
            known = ", ".join(sorted(_registered)) or "none"
            raise ValueError(f"Unknown profile {chosen!r} (registered: {known})") from None
