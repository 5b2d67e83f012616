"""``exclude`` patterns: gitignore semantics on paths relative to the synced root."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec


class Excluder:
    """Decides which relative paths a sync ignores.

    Gitignore rules, via `pathspec`: a pattern without ``/`` matches a name
    at any depth, a pattern with ``/`` is anchored at the root, ``*`` stays
    within one segment, ``**`` crosses segments, ``!`` re-includes, and a
    matched directory excludes everything below it.
    """

    def __init__(self, patterns: Iterable[str] | None) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = tuple(patterns or ())
        self._spec: GitIgnoreSpec | None = None
        if self.patterns:  # pathspec is imported only when there are patterns (~10 ms a process)
            from pathspec import GitIgnoreSpec

            self._spec = GitIgnoreSpec.from_lines(self.patterns)

    def __bool__(self) -> bool:
        return self._spec is not None

    def file(self, rel: str) -> bool:
        """True if the file at ``rel`` is excluded (directly or through a parent directory)."""
        return self._spec is not None and rel != "" and self._spec.match_file(rel)

    def directory(self, rel: str) -> bool:
        """True if the directory ``rel`` (and so all below it) is excluded."""
        return self._spec is not None and self._spec.match_file(rel.rstrip("/") + "/")
