"""The hook a store plugin implements (pluggy project name ``pos3``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .profiles import Profile
    from .store import Backend

hookspec = pluggy.HookspecMarker("pos3")
hookimpl = pluggy.HookimplMarker("pos3")


@dataclass(frozen=True)
class StoreSpec:
    """A URL scheme and how to connect to it.

    ``connect(profile, max_workers)`` returns a `Backend` whose client keeps
    at least ``max_workers`` connections. It is called only when the scheme
    is first used, so a plugin module must import its SDK inside ``connect``
    (``import pos3`` stays fast) and raise `ImportError` with the install
    command when the SDK is missing (``extra`` names the pip extra).
    """

    scheme: str
    connect: Callable[[Profile, int], Backend]
    extra: str | None = None


@hookspec
def pos3_register_stores(register: Callable[[StoreSpec], None]) -> None:
    """Call ``register(StoreSpec(...))`` once for every URL scheme this plugin serves."""
