"""Store discovery through the ``pos3`` entry-point group: the example plugin, and broken plugins.

The example plugin must be installed (``pip install -e examples/pos3-memstore``).
Broken plugins are faked for one test at a time: a ``*.dist-info`` directory
with an ``entry_points.txt`` on a temporary ``sys.path`` entry.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import pos3
from pos3 import plugins
from pos3.plugins import PluginError, schemes, store_spec

JUNK_MODULES = {
    "pos3_junk_missing_sdk": "import pos3_no_such_sdk  # noqa: F401\n",
    "pos3_junk_dup_a": "from pos3 import StoreSpec, hookimpl\n"
    "from pos3_memstore import MemBackend\n\n"
    "@hookimpl\ndef pos3_register_stores(register):\n"
    "    register(StoreSpec(scheme='dup', connect=MemBackend))\n",
    "pos3_junk_dup_b": "from pos3 import StoreSpec, hookimpl\n"
    "from pos3_memstore import MemBackend\n\n"
    "@hookimpl\ndef pos3_register_stores(register):\n"
    "    register(StoreSpec(scheme='DUP', connect=MemBackend))\n",
    "pos3_junk_hook_raises": "from pos3 import hookimpl\n\n"
    "@hookimpl\ndef pos3_register_stores(register):\n"
    "    raise RuntimeError('boom')\n",
}

JUNK_ENTRY_POINTS = """\
[pos3]
broken = pos3_junk_missing_sdk
junk-dup-a = pos3_junk_dup_a
junk-dup-b = pos3_junk_dup_b
hooky = pos3_junk_hook_raises
"""


@pytest.fixture
def junk_plugins(tmp_path: Path) -> Iterator[None]:
    """Install four broken plugins for this test only, and reload the registry around it."""
    site = tmp_path / "site"
    info = site / "pos3_junk_plugins-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pos3-junk-plugins\nVersion: 0\n")
    (info / "entry_points.txt").write_text(JUNK_ENTRY_POINTS)
    for name, source in JUNK_MODULES.items():
        (site / f"{name}.py").write_text(source)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.reset_registry()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in JUNK_MODULES:
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        plugins.reset_registry()


def test_the_example_plugin_is_found_through_its_entry_point() -> None:
    [ep] = [ep for ep in importlib.metadata.entry_points(group="pos3") if ep.name == "mem"]
    assert ep.value == "pos3_memstore"
    assert ep.dist is not None and ep.dist.name == "pos3-memstore"
    assert schemes()["mem"] == "mem"
    import pos3_memstore

    assert store_spec("mem").connect is pos3_memstore.MemBackend


def test_builtin_stores_register_like_plugins() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pos3")}
    assert eps["s3"] == "pos3.stores.s3" and eps["file"] == "pos3.stores.file"
    assert {"s3": "s3", "file": "file"}.items() <= schemes().items()


def test_discovery_is_lazy() -> None:
    """``import pos3`` loads no plugin; looking a scheme up loads plugins but no SDK."""
    code = textwrap.dedent(
        """
        import sys
        import pos3
        assert "pos3_memstore" not in sys.modules and "pos3.stores.s3" not in sys.modules
        from pos3.plugins import store_spec
        store_spec("mem")
        assert "pos3_memstore" in sys.modules and "boto3" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_scheme_names_the_available_ones() -> None:
    with pytest.raises(
        PluginError, match=r"No store is registered for nosuch:// URLs \(available: .*file://.*mem://.*s3://"
    ):
        store_spec("nosuch")


def test_a_missing_scheme_fails_through_the_public_api(tmp_path: Path) -> None:
    with pos3.mirror(cache_root=tmp_path, show_progress=False), pytest.raises(PluginError, match="nosuch://"):
        pos3.download("nosuch://bucket/key")


def test_a_plugin_that_fails_to_import_is_named_when_its_scheme_is_used(junk_plugins: None) -> None:
    with pytest.raises(PluginError) as err:
        store_spec("broken")
    msg = str(err.value)
    assert "No store is registered for broken:// URLs" in msg
    assert "broken (ModuleNotFoundError: No module named 'pos3_no_such_sdk')" in msg
    assert "hooky (RuntimeError: boom)" in msg


def test_two_plugins_claiming_one_scheme_are_both_named(junk_plugins: None) -> None:
    with pytest.raises(PluginError, match="all register the dup:// scheme; uninstall all but one") as err:
        store_spec("dup")
    assert "'junk-dup-a'" in str(err.value) and "'junk-dup-b'" in str(err.value)


def test_broken_plugins_do_not_break_the_other_stores(junk_plugins: None, tmp_path: Path) -> None:
    import pos3_memstore

    assert {"s3", "file", "mem"} <= set(schemes())
    pos3_memstore.create_bucket("plugins")
    try:
        with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
            out = pos3.upload("mem://plugins/out/", interval=None)
            (out / "a.txt").write_text("a")
            with pytest.raises(PluginError, match="junk-dup-a"):
                pos3.download("dup://elsewhere/out/")
            local = pos3.upload(f"file://{tmp_path}/remote/", interval=None)
            (local / "b.txt").write_text("b")
        assert pos3_memstore.keys("plugins") == ["out/a.txt"]
        assert (tmp_path / "remote/b.txt").read_text() == "b"
    finally:
        pos3_memstore.delete_bucket("plugins")


def test_reset_registry_forgets_plugins_that_are_gone(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "pos3_junk_plugins-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pos3-junk-plugins\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pos3]\nbroken = pos3_junk_missing_sdk\n")
    sys.path.insert(0, str(site))
    try:
        plugins.reset_registry()
        with pytest.raises(PluginError, match=r"failed to load: broken \(ModuleNotFoundError"):
            store_spec("nosuch")
    finally:
        sys.path.remove(str(site))
    plugins.reset_registry()
    with pytest.raises(PluginError) as err:
        store_spec("nosuch")
    assert "broken (" not in str(err.value)
    assert {"s3", "file", "mem"} <= set(schemes())


def test_import_pos3_loads_no_cloud_sdk():
    """`import pos3` stays fast: no store's SDK is imported until its scheme is used."""
    import subprocess
    import sys

    code = (
        "import sys, pos3\n"
        "heavy = ('boto3', 'botocore', 'awscrt', 'google.cloud', 'azure')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
