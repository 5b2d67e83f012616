"""Remote URLs (``scheme://[profile@]bucket/key``) and the rule that tells them from local paths.

The rule (`is_url`): a location is meant as a URL when it starts with a scheme (a letter, then at
least one letter, digit, ``+``, ``-`` or ``.``), a colon and a slash (``s3:/``, ``gs://``), or with
a registered scheme and a colon (``s3:bucket``: a URL missing its ``//``). Such a location must be a
well-formed URL, or `parse` raises `ValueError`: it never passes through as a local path (a
``pathlib.Path`` made from ``s3://b/k`` reads ``s3:/b/k`` and is refused too). Everything else is a
local path: absolute, relative, ``~``, names with colons (``run:1/x``) and Windows drive letters
(``C:/data``: a one-letter scheme). An empty location is an error.

Parsing is pure (no I/O, no plugin lookup): whether a store serves the scheme and whether the
profile exists is decided by `pos3.resolve`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection
from dataclasses import dataclass

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/?)")
#: A profile name in a URL's userinfo part (``s3://NAME@bucket``).
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: A bucket (S3, GCS), container (Azure, including ``$web``/``$root``) or plugin bucket name.
_BUCKET = re.compile(r"^\$?[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
#: Schemes whose URLs may have an empty authority (``file:///mnt/data``: the first path segment is the bucket).
ROOTED_SCHEMES = frozenset({"file"})


@dataclass(frozen=True)
class RemoteURL:
    """A parsed remote location. ``key`` is '' for a whole bucket.

    ``str(url)`` never contains the profile: it is what logs, progress and errors show.
    `qualified` is the form the user wrote (``s3://NAME@bucket/key``), for URLs pos3 returns.
    """

    scheme: str
    bucket: str
    key: str
    #: Written with an empty authority (``file:///mnt/data``): the bucket is the first path segment.
    rooted: bool = False
    #: The profile named in the URL's userinfo part (``s3://NAME@bucket``), or None.
    profile: str | None = None

    def __str__(self) -> str:
        return f"{self.scheme}://{'/' if self.rooted else ''}{self.bucket}/{self.key}"

    @property
    def qualified(self) -> str:
        """The URL with its profile, as the user wrote it: passing it back reaches the same profile."""
        if self.profile is None:
            return str(self)
        return f"{self.scheme}://{self.profile}@{'/' if self.rooted else ''}{self.bucket}/{self.key}"

    def shown(self, qualified: bool) -> str:
        """`qualified` if asked (URLs pos3 returns), else ``str(self)`` (what messages show)."""
        return self.qualified if qualified else str(self)

    def with_key(self, key: str) -> RemoteURL:
        """The URL of another key in the same bucket (and profile)."""
        return dataclasses.replace(self, key=key)

    @property
    def dir_prefix(self) -> str:
        """The key prefix that lists this location as a directory ('' or ending in '/')."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"


def is_url(value: str | os.PathLike[str], schemes: Collection[str] = ()) -> bool:
    """True if ``value`` is meant as a URL (see the module's rule; ``schemes``: the registered
    ones), False for a local path. An empty string raises `ValueError`: it is neither.
    """
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"Expected a URL or a local path as str or os.PathLike[str], got {value!r}")
    if not text.strip():
        raise ValueError("Empty location: expected a URL (scheme://bucket/key) or a local path")
    m = _SCHEME.match(text.lstrip())
    return m is not None and (bool(m.group(2)) or m.group(1).lower() in schemes)


def parse(url: str) -> RemoteURL:
    """Parse ``scheme://[profile@]bucket/key``; raise `ValueError` (one line, naming ``url``) if malformed."""
    if not is_url(url) and not _SCHEME.match(url.lstrip()):
        raise ValueError(f"Not a URL (expected scheme://bucket/key): {url!r}")
    if url != url.lstrip():
        raise ValueError(f"URL {url!r} starts with whitespace")
    colon = url.index(":")
    scheme, rest = url[:colon].lower(), url[colon + 1 :]
    if not rest.startswith("//"):
        hint = "; a pathlib.Path merges '//': pass URLs as str" if rest.startswith("/") else ""
        raise ValueError(f"Malformed URL {url!r}: expected {scheme}://bucket/key{hint}")
    authority, slash, key = rest[2:].partition("/")
    profile = None
    if "@" in authority:
        profile, _, authority = authority.partition("@")
        _check_profile_name(profile, url)
    rooted = not authority and bool(slash)
    if rooted:
        if scheme not in ROOTED_SCHEMES:
            raise ValueError(f"Malformed URL {url!r}: no bucket between {scheme}:// and '/'")
        authority, _, key = key.partition("/")
        if not authority or authority in (".", "..") or any(ord(c) < 32 for c in authority):
            raise ValueError(f"Malformed URL {url!r}: no valid directory after {scheme}:///")
    elif not authority:
        raise ValueError(f"Malformed URL {url!r}: no bucket (expected {scheme}://bucket/key)")
    elif not _BUCKET.match(authority):
        raise ValueError(
            f"Malformed URL {url!r}: {authority!r} is not a valid bucket name "
            "(letters, digits, '.', '-', '_'; at most 255 characters)"
        )
    return RemoteURL(scheme, authority, key, rooted, profile)


def _check_profile_name(name: str, url: str) -> None:
    if ":" in name:
        raise ValueError(f"Malformed URL {url!r}: a password in a URL is not supported; select a profile as NAME@")
    if not name:
        raise ValueError(f"Malformed URL {url!r}: empty profile name before '@'")
    if not PROFILE_NAME.match(name):
        raise ValueError(f"Malformed URL {url!r}: {name!r} is not a profile name (letters, digits, '.', '-', '_')")
