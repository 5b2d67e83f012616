"""The az:// store on Azurite, through the public API and the store interface."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pos3
from helpers import local_tree, write
from pos3 import Profile, plugins
from pos3_backends.azure import AzureBackend

pytest_plugins = ["emulator_fixtures"]


def put(az, container: str, files: dict[str, bytes]) -> None:
    c = az.get_container_client(container)
    for key, body in files.items():
        c.upload_blob(key, body, overwrite=True)


def remote_tree(az, container: str, prefix: str = "") -> dict[str, bytes]:
    c = az.get_container_client(container)
    blobs = c.list_blobs(name_starts_with=prefix)
    return {b.name[len(prefix) :]: c.download_blob(b.name).readall() for b in blobs}


def mirror(cache):
    return pos3.mirror(cache_root=cache, show_progress=False)


def test_registered_through_entry_point():
    assert plugins.schemes()["az"] == "azure"
    assert plugins.store_spec("az").extra == "azure"


def test_import_does_not_load_sdk():
    code = "import sys, pos3_backends.azure; print(any(m.startswith('azure') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(ImportError, match=r"pip install pos3\[azure\]"):
        AzureBackend(Profile(endpoint="http://127.0.0.1:1/x", public=True), 4)


def test_round_trip(az, az_container, az_profile, cache):
    put(az, az_container, {"data/a.txt": b"a", "data/sub/b.txt": b"bb", "data/é ü.txt": b"u"})
    with mirror(cache):
        p = pos3.download(f"az://{az_container}/data", profile=az_profile)
        assert p == cache / "az-emu.az" / az_container / "data"
        assert local_tree(p) == {"a.txt": b"a", "sub/b.txt": b"bb", "é ü.txt": b"u"}
        out = pos3.upload(f"az://{az_container}/out", interval=None, profile=az_profile)
        write(out, {"x/y.bin": b"123", "empty": b""})
    assert remote_tree(az, az_container, "out/") == {"x/y.bin": b"123", "empty": b""}
    blobs = az.get_container_client(az_container).list_blobs(name_starts_with="out/")
    assert all(b.content_settings.content_md5 for b in blobs)


def test_standard_env_configuration(az, azure_server, az_container, cache, monkeypatch):
    """No profile: AZURE_STORAGE_CONNECTION_STRING (the SDK's own setting) points the store at Azurite."""
    for k, v in azure_server.env().items():
        monkeypatch.setenv(k, v)
    put(az, az_container, {"d/a": b"1"})
    with mirror(cache):
        assert local_tree(pos3.download(f"az://{az_container}/d")) == {"a": b"1"}
        write(pos3.upload(f"az://{az_container}/up", interval=None), {"b": b"2"})
    assert remote_tree(az, az_container, "up/") == {"b": b"2"}
    with mirror(cache):
        assert pos3.ls(f"az://{az_container}/") == [f"az://{az_container}/d/", f"az://{az_container}/up/"]


@pytest.mark.parametrize("how", ["connection_string", "account_name", "sas_token"])
def test_profile_credential_options(az, azure_server, az_container, cache, how):
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    put(az, az_container, {"d/a": b"1"})
    if how == "connection_string":
        profile = Profile(local_name=how, options={"connection_string": azure_server.connection_string})
    elif how == "account_name":
        opts = {"account_name": azure_server.account_name, "account_key": azure_server.account_key}
        profile = Profile(local_name=how, endpoint=azure_server.endpoint, options=opts)
    else:
        sas = generate_account_sas(
            azure_server.account_name,
            azure_server.account_key,
            ResourceTypes(container=True, object=True),
            AccountSasPermissions(read=True, list=True),
            expiry=datetime.now(timezone.utc) + timedelta(hours=1),
        )
        profile = Profile(local_name=how, endpoint=azure_server.endpoint, options={"sas_token": sas})
    with mirror(cache):
        assert local_tree(pos3.download(f"az://{az_container}/d", profile=profile)) == {"a": b"1"}


def test_exclude(az, az_container, az_profile, cache):
    put(az, az_container, {"d/keep.txt": b"k", "d/skip.log": b"s", "d/tmp/x": b"t"})
    with mirror(cache):
        p = pos3.sync(f"az://{az_container}/d", interval=None, exclude=["*.log", "tmp/"], profile=az_profile)
        assert local_tree(p) == {"keep.txt": b"k"}
        write(p, {"new.log": b"n", "new.txt": b"t"})
    expected = {"keep.txt": b"k", "new.txt": b"t", "skip.log": b"s", "tmp/x": b"t"}
    assert remote_tree(az, az_container, "d/") == expected


def test_missing_container(az, az_profile, cache):
    with mirror(cache), pytest.raises(FileNotFoundError):
        pos3.download("az://no-such-container/data", profile=az_profile)
    store = AzureBackend(az_profile, 2).store("no-such-container")
    with pytest.raises(FileNotFoundError):
        list(store.list(""))
    with pytest.raises(FileNotFoundError):
        store.head("k")


def test_paging_beyond_one_page(az, az_container, azure_server, cache):
    files = {f"d/{i:03d}": str(i).encode() for i in range(23)} | {"d/sub/z": b"z"}
    put(az, az_container, files)
    opts = {"account_key": azure_server.account_key, "page_size": 5}
    small = Profile(local_name="small", endpoint=azure_server.endpoint, options=opts)
    store = AzureBackend(small, 2).store(az_container)
    assert [m.key for m in store.list("d/")] == sorted(files)
    with mirror(cache):
        assert local_tree(pos3.download(f"az://{az_container}/d", profile=small)) == {
            k[2:]: v for k, v in files.items()
        }
        assert len(pos3.ls(f"az://{az_container}/d", recursive=True, profile=small)) == 24


def test_anonymous_read_of_public_container(az, azure_server, cache):
    public = az.create_container("public-pos3", public_access="container")
    public.upload_blob("d/a", b"1", overwrite=True)
    anonymous = Profile(local_name="anon", endpoint=azure_server.endpoint, public=True)
    # public=True with a connection string: its account URL, without its key
    via_string = Profile(local_name="anon2", public=True, options={"connection_string": azure_server.connection_string})
    with mirror(cache):
        assert local_tree(pos3.download("az://public-pos3/d", profile=anonymous)) == {"a": b"1"}
        assert local_tree(pos3.download("az://public-pos3/d", profile=via_string)) == {"a": b"1"}


def test_anonymous_read_of_private_container_is_denied(az, az_container, azure_server, cache):
    put(az, az_container, {"d/a": b"1"})
    anonymous = Profile(local_name="anon", public=True, options={"connection_string": azure_server.connection_string})
    with mirror(cache), pytest.raises(PermissionError):
        pos3.download(f"az://{az_container}/d", profile=anonymous)


def test_batch_delete_with_missing_keys(az, az_container, az_profile):
    put(az, az_container, {f"k{i:03d}": b"" for i in range(0, 300, 20)})
    store = AzureBackend(az_profile, 4).store(az_container)
    store.delete(f"k{i:03d}" for i in range(300))  # two batches (256 + 44), most keys missing
    assert list(store.list("")) == []
    assert store.backend.batch_ok


def test_listing_comes_out_in_utf8_order(az, az_container, az_profile):
    """Azurite sorts by UTF-16 code unit (U+1F600 before U+E000); the store yields UTF-8 byte order."""
    keys = ["a\U0001f600", "a\U0001f600/x", "a\ue000", "a\uff5e", "b"]
    put(az, az_container, {k: b"" for k in keys})
    store = AzureBackend(az_profile, 2).store(az_container)
    assert [m.key for m in store.list("")] == sorted(keys, key=lambda k: k.encode())


def test_account_url_without_any_identity_is_a_permission_error(clean_cloud_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached login either
    with pytest.raises(PermissionError, match="No usable Azure credential"):
        AzureBackend(Profile(endpoint="https://pos3test.blob.core.windows.net"), 2)


def test_no_account_configured(clean_cloud_env):
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureBackend(Profile(), 2)


def test_native_transfers_by_default_and_sdk_on_request(az, az_container, az_profile, tmp_path):
    """Blob bodies move natively unless the profile asks for the SDK; both paths give the same metadata."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"native and sdk")
    for client in ("native", "sdk"):
        options = {**az_profile.options, "transfer_client": client}
        backend = AzureBackend(Profile(local_name=f"az-{client}", endpoint=az_profile.endpoint, options=options), 4)
        try:
            store = backend.store(az_container)
            started = store.start_put(f"{client}.bin", src)
            assert (started is not None) == (client == "native")
            put_meta = started.result() if started is not None else store.put(f"{client}.bin", src)
            dest = tmp_path / f"{client}.out"
            got = store.get(f"{client}.bin", dest, len(b"native and sdk"))
            assert dest.read_bytes() == b"native and sdk"
            assert (
                (got.version, got.md5)
                == (put_meta.version, put_meta.md5)
                == (store.head(f"{client}.bin").version, put_meta.md5)
            )
        finally:
            backend.close()
    with pytest.raises(ValueError, match="transfer_client"):
        AzureBackend(
            Profile(
                local_name="bad",
                endpoint=az_profile.endpoint,
                options={**az_profile.options, "transfer_client": "curl"},
            ),
            4,
        )


def test_key_listing_and_download_do_not_import_the_sdk(az, az_container, azure_server, tmp_path):
    """With a key (or SAS, or anonymous access) the native path needs no SDK: a listing, a HEAD and a
    download (the no-op and download paths) never import azure-storage-blob, and a listing, a HEAD and
    a read of unknown size (all a no-op and a lease need) not even aiohttp: the event loop starts with
    the first transfer."""
    put(az, az_container, {"a/x.txt": b"x"})
    code = (
        "import sys; from pathlib import Path; from pos3 import Profile; from pos3_backends.azure import AzureBackend\n"
        f"p = Profile(local_name='p', endpoint={azure_server.endpoint!r},\n"
        f"            options={{'account_key': {azure_server.account_key!r}}})\n"
        f"b = AzureBackend(p, 4); s = b.store({az_container!r})\n"
        "assert [m.key for m in s.list('a/')] == ['a/x.txt'] and s.head('a/x.txt').size == 1\n"
        f"assert s.get('a/x.txt', Path({str(tmp_path / 'y')!r})).size == 1\n"  # size unknown: a lease read
        "print('aiohttp' in sys.modules)\n"
        f"s.get('a/x.txt', Path({str(tmp_path / 'x')!r}), 1)\n"
        "print('azure.storage.blob' in sys.modules, 'aiohttp' in sys.modules); b.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\nFalse True\n"
    assert (tmp_path / "x").read_bytes() == (tmp_path / "y").read_bytes() == b"x"
