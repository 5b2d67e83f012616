"""Parsing of remote URLs (``scheme://bucket/key``)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class RemoteURL:
    """A parsed remote location. ``key`` is '' for a whole bucket."""

    scheme: str
    bucket: str
    key: str
    #: Written with an empty authority (``file:///mnt/data``): the bucket is the first path segment.
    rooted: bool = False

    def __str__(self) -> str:
        return f"{self.scheme}://{'/' if self.rooted else ''}{self.bucket}/{self.key}"

    def with_key(self, key: str) -> RemoteURL:
        """The URL of another key in the same bucket."""
        return dataclasses.replace(self, key=key)

    @property
    def dir_prefix(self) -> str:
        """The key prefix that lists this location as a directory ('' or ending in '/')."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"


def is_remote(value: object) -> bool:
    """True for a string that looks like ``scheme://...`` (a local path never does)."""
    return isinstance(value, str) and bool(_SCHEME.match(value))


def parse(url: str) -> RemoteURL:
    """Parse ``scheme://bucket/key``; raise `ValueError` for a malformed URL."""
    m = _SCHEME.match(url)
    if not m:
        raise ValueError(f"Not a remote URL (expected scheme://bucket/key): {url!r}")
    scheme = m.group(1).lower()
    rest = url[m.end() :]
    rooted = rest.startswith("/") and not rest.startswith("//")
    if rooted:
        rest = rest[1:]  # an empty authority (file:///mnt/data): the first path segment is the bucket
    bucket, _, key = rest.partition("/")
    if not bucket or any(c.isspace() for c in bucket):
        raise ValueError(f"Remote URL has no valid bucket: {url!r}")
    return RemoteURL(scheme, bucket, key, rooted)
