"""Profiles: which endpoint and credentials a URL is read with, and where its cache lives.

A name resolves to the profile registered in code (`register_profile`), else to the entry of that
name in the profiles file (`profiles_file`: ``$POS3_PROFILES_FILE``, else
``$XDG_CONFIG_HOME/pos3/profiles.toml``, else ``~/.config/pos3/profiles.toml``), else it is an
error. The file is read when a name is looked up (each mirror looks a name up once), so an edit
takes effect at the next ``with pos3.mirror()``; an entry is checked only when it is used.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: A profile's directory under the cache root; ``_`` belongs to the default profile.
LOCAL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
DEFAULT_LOCAL_NAME = "_"
#: 0.4.0's credential arguments and the S3 options they set.
CREDENTIAL_ALIASES = {
    "access_key": "access_key_id",
    "secret_key": "secret_access_key",
    "session_token": "session_token",
}
#: Keys of a credentials file section (AWS INI) and the S3 options they set.
CREDENTIAL_KEYS = {
    "aws_access_key_id": "access_key_id",
    "aws_secret_access_key": "secret_access_key",
    "aws_session_token": "session_token",
}


@dataclass(frozen=True)
class Profile:
    """How to reach one storage service.

    ``endpoint`` and ``region`` map onto the backend's client configuration;
    ``None`` leaves the backend's standard configuration chain in charge
    (for S3: ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``, ``~/.aws``).
    ``public=True`` never signs a request, even with credentials present.
    ``local_name`` (``[A-Za-z0-9_-]+``) names the profile's directory under the cache root; ``_``
    is the default profile's. ``options`` holds backend-specific settings (for S3: ``aws_profile``,
    ``access_key_id``, ``secret_access_key``, ``session_token``, ``addressing_style``, ...); their
    values never appear in a repr. ``access_key``, ``secret_key`` and ``session_token`` (0.4.0's
    names) set the S3 credential options; partial credentials raise `ValueError`.
    """

    local_name: str = DEFAULT_LOCAL_NAME
    endpoint: str | None = None
    region: str | None = None
    public: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    access_key: InitVar[str | None] = None
    secret_key: InitVar[str | None] = None
    session_token: InitVar[str | None] = None

    def __post_init__(self, access_key: str | None, secret_key: str | None, session_token: str | None) -> None:
        name = self.local_name
        if not isinstance(name, str) or not LOCAL_NAME.match(name):
            raise ValueError(f"Profile local_name must match [A-Za-z0-9_-]+ (one cache directory), got {name!r}")
        opts = dict(self.options)
        given = {"access_key": access_key, "secret_key": secret_key, "session_token": session_token}
        for alias, option in CREDENTIAL_ALIASES.items():
            values = [v for v in (given[alias], opts.pop(alias, None), opts.get(option)) if v is not None]
            if any(v != values[0] for v in values):
                raise ValueError(f"Profile {name!r}: {alias} is given twice ({option}), with different values")
            if values:
                opts[option] = values[0]
        _check_credentials(opts, f"Profile {name!r}")
        object.__setattr__(self, "options", MappingProxyType(opts))

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


def _check_credentials(opts: Mapping[str, Any], what: str) -> None:
    """Keys come as a pair (a session token only with both); an empty key is an error."""
    for option in ("access_key_id", "secret_access_key", "session_token"):
        if option in opts and not opts[option]:
            raise ValueError(f"{what}: {option} is empty")
    has_id, has_secret = "access_key_id" in opts, "secret_access_key" in opts
    if has_id != has_secret:
        given, missing = ("an access key", "a secret key") if has_id else ("a secret key", "an access key")
        raise ValueError(f"{what}: partial credentials: {given} without {missing}")
    if "session_token" in opts and not has_id:
        raise ValueError(f"{what}: partial credentials: a session token without an access key and secret key")


def differences(a: Profile, b: Profile) -> str:
    """What differs between two profiles, for error messages: option values are never shown."""
    out = [
        f"{attr} {getattr(a, attr)!r} != {getattr(b, attr)!r}"
        for attr in ("local_name", "endpoint", "region", "public")
        if getattr(a, attr) != getattr(b, attr)
    ]
    for opt in sorted(set(a.options) | set(b.options)):
        if opt not in a.options or opt not in b.options:
            out.append(f"option {opt} set in only one")
        elif a.options[opt] != b.options[opt]:
            out.append(f"option {opt} differs")
    return ", ".join(out)


DEFAULT = Profile()


def check_reserved(profile: Profile, what: str) -> Profile:
    """``profile``, unless it uses the default profile's directory ``_`` without being the default profile."""
    if profile.local_name == DEFAULT_LOCAL_NAME and profile != DEFAULT:
        raise ValueError(
            f"{what}: local_name '_' is reserved for the default profile (no endpoint, region or options); "
            "give this profile its own local_name"
        )
    return profile


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

    Backend-specific settings are keyword ``options`` (see `Profile`; ``access_key``,
    ``secret_key`` and ``session_token`` included). Registering a name again with the same
    configuration returns the registered profile; with a different one, or a ``local_name``
    another registered profile already uses, raises `ValueError` naming the differences.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"A profile name must be a non-empty string without surrounding spaces, got {name!r}")
    chosen = local_name if local_name is not None else name
    if not LOCAL_NAME.match(chosen):
        raise ValueError(
            f"Profile {name!r}: local_name {chosen!r} must match [A-Za-z0-9_-]+; pass local_name= to name its directory"
        )
    profile = check_reserved(
        Profile(local_name=chosen, endpoint=endpoint, region=region, public=public, options=options),
        f"Profile {name!r}",
    )
    with _lock:
        old = _registered.get(name)
        if old is not None:
            if old != profile:
                diff = differences(old, profile)
                raise ValueError(f"Profile {name!r} is already registered with a different configuration: {diff}")
            return old
        for other_name, other in _registered.items():
            if other.local_name == profile.local_name and other != profile:
                raise ValueError(
                    f"Profile {name!r}: local_name {profile.local_name!r} is already used by profile {other_name!r} "
                    f"with a different configuration ({differences(other, profile)}); give it its own local_name"
                )
        _registered[name] = profile
    return profile


def resolve(profile: str | Profile | None, default: str | Profile | None = None) -> Profile:
    """Turn a profile argument (name, object or ``None``) into a `Profile`.

    A name is looked up in code registrations, then in the profiles file; an unknown name raises
    `ValueError` (never a fallback to the default profile).
    """
    chosen = profile if profile is not None else default
    if chosen is None:
        return DEFAULT
    if isinstance(chosen, Profile):
        return chosen
    if not isinstance(chosen, str):
        raise TypeError(f"profile must be a name, a Profile or None, got {chosen!r}")
    with _lock:
        found = _registered.get(chosen)
        known = sorted(_registered)
    if found is not None:
        return found
    path = profiles_file()
    from_file = load_from_file(chosen, path)
    if from_file is not None:
        return from_file
    where = f"no profile of that name in {path}" if path.is_file() else f"no profiles file at {path}"
    raise ValueError(f"Unknown profile {chosen!r} (registered in code: {', '.join(known) or 'none'}; {where})")


# -- the profiles file ---------------------------------------------------------

#: Keys of a ``[profiles.NAME]`` table that are not backend options.
_FILE_FIELDS = {"endpoint": str, "region": str, "public": bool, "local_name": str, "credentials_file": str}


def profiles_file() -> Path:
    """``$POS3_PROFILES_FILE``, else ``$XDG_CONFIG_HOME/pos3/profiles.toml`` (an absolute
    ``XDG_CONFIG_HOME`` only), else ``~/.config/pos3/profiles.toml``."""
    override = os.environ.get("POS3_PROFILES_FILE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path("~/.config").expanduser()
    return base / "pos3" / "profiles.toml"


def load_from_file(name: str, path: Path) -> Profile | None:
    """The profile ``name`` defined in the profiles file at ``path``, or None if it has none.

    Any problem with the file or with that entry (its credentials file included) raises
    `ValueError` naming the file: a broken entry never falls back to other credentials.
    """
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"Profiles file {path}: cannot be read: {exc}") from None
    unknown = sorted(set(data) - {"profiles"})
    if unknown or not isinstance(data.get("profiles", {}), dict):
        raise ValueError(f"Profiles file {path}: expected only [profiles.NAME] tables, found {unknown or ['profiles']}")
    entry = data.get("profiles", {}).get(name)
    if entry is None:
        return None
    what = f"Profiles file {path}, profile {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{what}: expected a [profiles.{name}] table")
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "options":
            if not isinstance(value, dict):
                raise ValueError(f"{what}: 'options' must be a table")
            options.update(value)
        elif key in _FILE_FIELDS:
            if not isinstance(value, _FILE_FIELDS[key]):
                raise ValueError(f"{what}: {key} must be a {_FILE_FIELDS[key].__name__}")
            fields[key] = value
        else:
            options[key] = value
    if "local_name" not in fields and not LOCAL_NAME.match(name):
        raise ValueError(f'{what}: the name is not a directory name ([A-Za-z0-9_-]+); add local_name = "..."')
    creds = fields.pop("credentials_file", None)
    if creds is not None:
        given = [k for k in (*CREDENTIAL_ALIASES, *CREDENTIAL_KEYS.values()) if k in options]
        if given:
            raise ValueError(f"{what}: credentials are given both inline ({', '.join(given)}) and in credentials_file")
        options.update(read_credentials(name, _relative_to(path, creds), what))
    try:
        profile = Profile(
            local_name=fields.get("local_name", name),
            endpoint=fields.get("endpoint"),
            region=fields.get("region"),
            public=fields.get("public", False),
            options=options,
        )
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return check_reserved(profile, what)


def _relative_to(profiles: Path, value: str) -> Path:
    """``~`` expands; a relative path is taken next to the profiles file."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else profiles.parent / p


def read_credentials(name: str, path: Path, what: str) -> dict[str, str]:
    """The S3 credential options of section ``[name]`` of an AWS-style INI credentials file.

    A missing file, a missing section, an unknown key or a half-filled section raises `ValueError`
    naming the file (never the values).
    """
    import configparser  # only for profiles with a credentials_file

    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ValueError(f"{what}: credentials_file {path} does not exist") from None
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: credentials_file {path} cannot be read: {type(exc).__name__}") from None
    if not parser.has_section(name):
        found = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
        raise ValueError(f"{what}: credentials_file {path} has no [{name}] section (sections: {found})")
    section = dict(parser[name])
    unknown = sorted(set(section) - set(CREDENTIAL_KEYS))
    if unknown:
        raise ValueError(
            f"{what}: credentials_file {path} section [{name}] has unknown keys {unknown} "
            f"(expected {', '.join(CREDENTIAL_KEYS)})"
        )
    options = {CREDENTIAL_KEYS[k]: v.strip() for k, v in section.items()}
    if "access_key_id" not in options or "secret_access_key" not in options:
        raise ValueError(
            f"{what}: credentials_file {path} section [{name}] needs both aws_access_key_id and aws_secret_access_key"
        )
    _check_credentials(options, f"{what}: credentials_file {path} section [{name}]")
    return options
