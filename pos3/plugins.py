"""Store discovery: pluggy plugins registered through the ``pos3`` entry-point group.

The built-in S3 store registers exactly like a third-party one: an entry
point in the ``pos3`` group naming a module with a `pos3_register_stores`
hook implementation.
"""

from __future__ import annotations

import importlib.metadata
import threading

import pluggy

from . import hookspecs
from .hookspecs import StoreSpec

ENTRY_POINT_GROUP = "pos3"

pm = pluggy.PluginManager("pos3")
pm.add_hookspecs(hookspecs)


class PluginError(RuntimeError):
    """A plugin could not be loaded, or two plugins claim one scheme."""


class _Registry:
    """Schemes collected from the plugins, loaded once on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = False
        self.specs: dict[str, tuple[str, StoreSpec]] = {}
        self.broken: dict[str, str] = {}
        self.conflicts: dict[str, list[str]] = {}

    def load(self) -> None:
        with self.lock:
            if self.loaded:
                return
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                    continue
                try:
                    pm.register(ep.load(), name=ep.name)
                except Exception as exc:  # noqa: BLE001 - reported when a scheme is missing
                    self.broken[ep.name] = f"{type(exc).__name__}: {exc}"
            self._collect()
            self.loaded = True

    def _collect(self) -> None:
        for impl in pm.hook.pos3_register_stores.get_hookimpls():  # registration order
            specs: list[StoreSpec] = []
            try:
                impl.function(register=specs.append)
            except Exception as exc:  # noqa: BLE001
                self.broken[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
                continue
            for spec in specs:
                scheme = spec.scheme.lower()
                if scheme in self.specs:
                    self.conflicts.setdefault(scheme, [self.specs[scheme][0]]).append(impl.plugin_name)
                else:
                    self.specs[scheme] = (impl.plugin_name, spec)


_registry = _Registry()


def reset_registry() -> None:
    """Unregister every plugin so that the next lookup reads the entry points again.

    For tests that add or remove plugins at run time (pytest's ``monkeypatch.syspath_prepend``
    with a fake ``*.dist-info``); do not call it while stores are being looked up.
    """
    global _registry
    with _registry.lock:
        for name, _plugin in pm.list_name_plugin():
            pm.unregister(name=name)
        _registry = _Registry()


def schemes() -> dict[str, str]:
    """Every registered URL scheme with the name of the plugin serving it."""
    _registry.load()
    return {s: name for s, (name, _) in _registry.specs.items() if s not in _registry.conflicts}


def store_spec(scheme: str) -> StoreSpec:
    """The `StoreSpec` serving ``scheme``, or a `PluginError` saying why there is none."""
    _registry.load()
    scheme = scheme.lower()
    if scheme in _registry.conflicts:
        names = " and ".join(repr(n) for n in _registry.conflicts[scheme])
        raise PluginError(f"Plugins {names} all register the {scheme}:// scheme; uninstall all but one")
    if scheme in _registry.specs:
        return _registry.specs[scheme][1]
    known = ", ".join(f"{s}://" for s in sorted(_registry.specs)) or "none"
    msg = f"No store is registered for {scheme}:// URLs (available: {known})."
    if _registry.broken:
        msg += " Plugins that failed to load: " + "; ".join(f"{n} ({e})" for n, e in sorted(_registry.broken.items()))
    raise PluginError(msg)
