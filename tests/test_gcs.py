"""The gs:// store on fake-gcs-server, through the public API and the store interface."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pos3
from helpers import local_tree, write
from pos3 import Profile, plugins
from pos3_backends.gcs import GCSBackend

pytest_plugins = ["emulator_fixtures"]


def put(gcs, bucket: str, files: dict[str, bytes]) -> None:
    b = gcs.bucket(bucket)
    for key, body in files.items():
        b.blob(key).upload_from_string(body)


def remote_tree(gcs, bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {b.name[len(prefix) :]: b.download_as_bytes() for b in gcs.list_blobs(bucket, prefix=prefix)}


def mirror(cache):
    return pos3.mirror(cache_root=cache, show_progress=False)


def test_registered_through_entry_point():
    assert plugins.schemes()["gs"] == "gcs"
    assert plugins.store_spec("gs").extra == "gcs"


def test_import_does_not_load_sdk():
    code = "import sys, pos3_backends.gcs; print(any(m.startswith('google') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ImportError, match=r"pip install pos3\[gcs\]"):
        GCSBackend(Profile(public=True), 4)


def test_round_trip(gcs, gcs_bucket, gcs_profile, cache):
    put(gcs, gcs_bucket, {"data/a.txt": b"a", "data/sub/b.txt": b"bb", "data/é ü.txt": b"u"})
    with mirror(cache):
        p = pos3.download(f"gs://{gcs_bucket}/data", profile=gcs_profile)
        assert p == cache / "gcs-emu.gs" / gcs_bucket / "data"
        assert local_tree(p) == {"a.txt": b"a", "sub/b.txt": b"bb", "é ü.txt": b"u"}
        out = pos3.upload(f"gs://{gcs_bucket}/out", interval=None, profile=gcs_profile)
        write(out, {"x/y.bin": b"123", "empty": b""})
    assert remote_tree(gcs, gcs_bucket, "out/") == {"x/y.bin": b"123", "empty": b""}
    assert all(b.md5_hash for b in gcs.list_blobs(gcs_bucket, prefix="out/"))


def test_standard_env_configuration(gcs, gcs_server, gcs_bucket, cache, monkeypatch):
    """No profile: STORAGE_EMULATOR_HOST (the SDK's own setting) points the store at the emulator."""
    for k, v in gcs_server.env().items():
        monkeypatch.setenv(k, v)
    put(gcs, gcs_bucket, {"d/a": b"1"})
    with mirror(cache):
        assert local_tree(pos3.download(f"gs://{gcs_bucket}/d")) == {"a": b"1"}
        write(pos3.upload(f"gs://{gcs_bucket}/up", interval=None), {"b": b"2"})
    assert remote_tree(gcs, gcs_bucket, "up/") == {"b": b"2"}
    with mirror(cache):
        assert pos3.ls(f"gs://{gcs_bucket}/") == [f"gs://{gcs_bucket}/d/", f"gs://{gcs_bucket}/up/"]


def test_exclude(gcs, gcs_bucket, gcs_profile, cache):
    put(gcs, gcs_bucket, {"d/keep.txt": b"k", "d/skip.log": b"s", "d/tmp/x": b"t"})
    with mirror(cache):
        p = pos3.sync(f"gs://{gcs_bucket}/d", interval=None, exclude=["*.log", "tmp/"], profile=gcs_profile)
        assert local_tree(p) == {"keep.txt": b"k"}
        write(p, {"new.log": b"n", "new.txt": b"t"})
    assert remote_tree(gcs, gcs_bucket, "d/") == {"keep.txt": b"k", "new.txt": b"t", "skip.log": b"s", "tmp/x": b"t"}


def test_missing_bucket(gcs, gcs_profile, cache):
    with mirror(cache), pytest.raises(FileNotFoundError):
        pos3.download("gs://no-such-bucket-pos3/data", profile=gcs_profile)
    store = GCSBackend(gcs_profile, 2).store("no-such-bucket-pos3")
    with pytest.raises(FileNotFoundError):
        list(store.list(""))


def test_paging_beyond_one_page(gcs, gcs_bucket, gcs_server, cache):
    files = {f"d/{i:03d}": str(i).encode() for i in range(23)} | {"d/sub/z": b"z"}
    put(gcs, gcs_bucket, files)
    small = Profile(local_name="small", endpoint=gcs_server.endpoint, public=True, options={"page_size": 5})
    store = GCSBackend(small, 2).store(gcs_bucket)
    assert [m.key for m in store.list("d/")] == sorted(files)
    with mirror(cache):
        path = pos3.download(f"gs://{gcs_bucket}/d", profile=small)
        assert local_tree(path) == {k[2:]: v for k, v in files.items()}
        assert len(pos3.ls(f"gs://{gcs_bucket}/d", recursive=True, profile=small)) == 24


def test_delete_many_with_missing_keys(gcs, gcs_bucket, gcs_profile):
    put(gcs, gcs_bucket, {f"k{i}": b"" for i in range(0, 150, 10)})
    store = GCSBackend(gcs_profile, 8).store(gcs_bucket)
    store.delete(f"k{i}" for i in range(150))
    assert list(store.list("")) == []
    assert store.backend.batch_ok is False  # fake-gcs-server has no batch endpoint: detected, then single deletes


def test_no_credentials_is_a_permission_error(clean_cloud_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login either
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(PermissionError, match="no usable Google credentials"):
        GCSBackend(Profile(), 2)


def test_native_transfers_by_default_and_sdk_on_request(gcs, gcs_bucket, gcs_profile, tmp_path):
    """Object bodies move natively unless the profile asks for the SDK; both paths give the same metadata."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"native and sdk")
    for client in ("native", "sdk"):
        profile = Profile(
            local_name=f"gcs-{client}", endpoint=gcs_profile.endpoint, public=True, options={"transfer_client": client}
        )
        backend = GCSBackend(profile, 4)
        try:
            store = backend.store(gcs_bucket)
            started = store.start_put(f"{client}.bin", src)
            assert (started is not None) == (client == "native")
            put_meta = started.result() if started is not None else store.put(f"{client}.bin", src)
            dest = tmp_path / f"{client}.out"
            got = store.get(f"{client}.bin", dest, len(b"native and sdk"))
            assert dest.read_bytes() == b"native and sdk"
            assert got.version == put_meta.version and got.md5 == put_meta.md5
            listed = {m.key: m for m in store.list("")}
            assert (listed[f"{client}.bin"].version, listed[f"{client}.bin"].md5) == (put_meta.version, put_meta.md5)
        finally:
            backend.close()
    with pytest.raises(ValueError, match="transfer_client"):
        GCSBackend(
            Profile(local_name="bad", endpoint=gcs_profile.endpoint, public=True, options={"transfer_client": "curl"}),
            4,
        )


def test_anonymous_listing_and_download_do_not_import_the_sdk(gcs, gcs_bucket, gcs_server, tmp_path):
    """With no credentials to load, a listing and a download (the no-op and download paths) never import
    google-cloud-storage, and a listing and a read of unknown size (all a no-op and a lease need) not
    even aiohttp: the event loop starts with the first transfer."""
    put(gcs, gcs_bucket, {"a/x.txt": b"x"})
    code = (
        "import sys; from pathlib import Path; from pos3 import Profile; from pos3_backends.gcs import GCSBackend\n"
        f"b = GCSBackend(Profile(local_name='p', endpoint={gcs_server.endpoint!r}, public=True), 4)\n"
        f"s = b.store({gcs_bucket!r})\n"
        "assert [m.key for m in s.list('a/')] == ['a/x.txt'] and s.head('a/x.txt').size == 1\n"
        f"assert s.get('a/x.txt', Path({str(tmp_path / 'y')!r})).size == 1\n"  # size unknown: a lease read
        "print('aiohttp' in sys.modules)\n"
        f"s.get('a/x.txt', Path({str(tmp_path / 'x')!r}), 1)\n"
        "print('google.cloud.storage' in sys.modules, 'aiohttp' in sys.modules); b.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\nFalse True\n"
    assert (tmp_path / "x").read_bytes() == (tmp_path / "y").read_bytes() == b"x"
