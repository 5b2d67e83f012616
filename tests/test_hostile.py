"""Hostile and mistaken input: one clear error, before any transfer where possible, nothing written or deleted.

Also the access rules: a public profile never sends credentials, and cache files follow the umask.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3.executor import SyncError
from pos3.local import NameRules, UnsafeKeyError, check_rel, fold_clashes, probe, without_file_dir_clashes
from pos3.patterns import Excluder
from pos3.planner import Direction
from pos3.state import StateDB
from pos3.sync import Root
from pos3.urls import parse

HOSTILE = "Hostile input"


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# -- pure key rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "x/..\\..\\evil",
        "a\\b",
        "a/\0b",
        "../up",
        "/abs",
        "a//b",
        "a/./b",
        "n" * 256,
        "é" * 128,  # 128 characters, 256 bytes of UTF-8
        "a/",
    ],
)
def test_check_rel_refuses(rel):
    with pytest.raises(UnsafeKeyError, match="Refusing remote key"):
        check_rel(rel, "k/" + rel)


def test_check_rel_accepts_names_up_to_the_limits():
    assert check_rel("n" * 255, "k") == "n" * 255
    assert check_rel("d/" + "é" * 127, "k")  # 254 bytes
    rules = NameRules(name_max=255, rel_max=20)
    assert check_rel("a" * 20, "k", rules)
    with pytest.raises(UnsafeKeyError, match="too long"):
        check_rel("a" * 10 + "/" + "b" * 10, "k", rules)


def test_file_dir_clash_is_found_across_keys_sorting_between():
    items = ["a", "a-x", "a.txt", "a/b", "b"]
    stream = without_file_dir_clashes(items, rel=lambda r: r, key=lambda r: "d/" + r)
    with pytest.raises(UnsafeKeyError, match="'d/a' and 'd/a/b'"):
        next(stream)  # the file half is held back: nothing was yielded before the refusal


def test_file_dir_clash_check_passes_clean_streams_in_order():
    items = ["a", "a-x", "a.txt", "a0", "ab/c", "ab/d/e", "b", "b0/x"]
    assert list(without_file_dir_clashes(items, rel=lambda r: r, key=lambda r: r)) == items
    with pytest.raises(UnsafeKeyError, match="'x/a' and 'x/a/b/c'"):
        list(without_file_dir_clashes(["x/a", "x/a/b/c"], rel=lambda r: r, key=lambda r: r))


def test_fold_clashes():
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    case = NameRules(folds_case=True)
    norm = NameRules(folds_unicode=True)
    plain = NameRules()
    assert fold_clashes([("A.txt", "k/A.txt"), ("a.txt", "k/a.txt")], case) == ("k/A.txt", "k/a.txt")
    assert fold_clashes([("A.txt", "k/A.txt"), ("a.txt", "k/a.txt")], plain) is None
    assert fold_clashes([(nfc, "k/1"), (nfd, "k/2")], norm) == ("k/1 (" + nfc + ")", "k/2 (" + nfd + ")")
    assert fold_clashes([(nfc, "k/1"), (nfd, "k/2")], case) is None
    # Directories fold too: A/x and a/y would share one local directory.
    assert fold_clashes([("A/x", "k/A/x"), ("a/y", "k/a/y")], case) == ("k/A/x (A)", "k/a/y (a)")
    assert fold_clashes([("a/x", "k/a/x"), ("a/y", "k/a/y")], case) is None


def test_probe_matches_what_the_filesystem_does(tmp_path):
    rules = probe(tmp_path)
    (tmp_path / "Q\u00e9").write_bytes(b"")
    assert rules.folds_case == os.path.lexists(tmp_path / "q\u00e9")
    assert rules.folds_unicode == os.path.lexists(tmp_path / "Qe\u0301")
    assert rules.name_max == os.pathconf(tmp_path, "PC_NAME_MAX")
    assert [p.name for p in tmp_path.iterdir()] == ["Q\u00e9"]  # the probe file is gone


# -- hostile keys, end to end ----------------------------------------------------------


@pytest.fixture
def mem_bucket() -> Iterator[str]:
    import pos3_memstore

    name = f"hostile-{os.getpid()}-{next(_names)}"
    pos3_memstore.create_bucket(name)
    yield name
    pos3_memstore.delete_bucket(name)


_names = itertools.count()


def mem_put(bucket: str, files: dict[str, bytes], tmp: Path) -> None:
    from pos3.plugins import store_spec

    store = store_spec("mem").connect(pos3.Profile(), 2).store(bucket)
    for key, body in files.items():
        src = tmp / "src"
        src.write_bytes(body)
        store.put(key, src)


@pytest.mark.reliability(
    "Keys with '..', a backslash, NUL, '//' or overlong names are refused before any transfer (mem)", group=HOSTILE
)
@pytest.mark.parametrize(
    "bad", ["x/..\\..\\evil", "..\\evil", "a\0b", "x/../../evil", "/abs", "n" * 256, "é" * 200], ids=range(7)
)
def test_hostile_keys_are_refused_before_any_transfer(mem_bucket, cache, tmp_path, bad):
    mem_put(mem_bucket, {"d/0-first": b"1", f"d/{bad}": b"evil", "d/z-last": b"2"}, tmp_path)
    local = tmp_path / "sandbox" / "d"
    write(local, {"keep": b"keep"})
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(UnsafeKeyError) as info:
        pos3.download(f"mem://{mem_bucket}/d", local=local)
    assert repr(f"d/{bad}") in str(info.value)
    assert files_under(tmp_path / "sandbox") == {"d/keep"}  # no transfer at all, nothing deleted


@pytest.mark.reliability("A local path longer than PATH_MAX is refused before any transfer (S3)", group=HOSTILE)
def test_overlong_local_path_is_refused(s3, bucket, cache, tmp_path):
    deep = tmp_path
    while len(os.fsencode(deep)) < 3700:
        deep = deep / ("p" * 200)
    deep.mkdir(parents=True)
    key = "d/" + "k" * 200 + "/" + "k" * 200
    put(s3, bucket, {"d/ok": b"1", key: b"2"})
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(UnsafeKeyError, match="too long"):
        pos3.download(f"s3://{bucket}/d", local=deep / "d")
    assert not (deep / "d" / "ok").exists()


@pytest.mark.reliability("A key that is both an object and a prefix is refused before any transfer (S3)", group=HOSTILE)
def test_object_and_prefix_is_refused_before_any_transfer(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"d/0": b"0", "d/a": b"file", "d/a-x": b"x", "d/a/b": b"under", "d/z": b"z"})
    local = tmp_path / "d"
    write(local, {"keep": b"keep"})
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(UnsafeKeyError) as info:
        pos3.download(f"s3://{bucket}/d", local=local)
    assert "'d/a' and 'd/a/b'" in str(info.value)
    assert local_tree(local) == {"keep": b"keep"}


@pytest.mark.reliability(
    "Names a case- or normalisation-folding filesystem merges are refused before any transfer (S3)", group=HOSTILE
)
@pytest.mark.parametrize("clash", ["remote-remote", "remote-local", "directories"])
def test_folded_names_are_refused_before_any_transfer(s3, bucket, cache, tmp_path, clash):
    """The probe's answer is fixed to "folds" (this machine's filesystem does not fold): the refusal logic is real."""
    nfd = unicodedata.normalize("NFD", "Café")
    remote = {
        "remote-remote": {"d/Readme": b"1", "d/readme": b"2", "d/x": b"x"},
        "remote-local": {f"d/{nfd}": b"remote", "d/x": b"x"},
        "directories": {"d/Logs/a": b"1", "d/logs/b": b"2", "d/x": b"x"},
    }[clash]
    put(s3, bucket, remote)
    local = tmp_path / "d"
    write(local, {"keep": b"keep", "caf\u00e9": b"local"} if clash == "remote-local" else {"keep": b"keep"})
    before = local_tree(local)
    with pos3.mirror(cache_root=cache, show_progress=False) as m:
        url = parse(f"s3://{bucket}/d")
        root = Root(url, m.store(url, pos3.Profile()), local, False, Excluder(None), StateDB(tmp_path / "s.sqlite"))
        root.names, root._probed = NameRules(folds_case=True, folds_unicode=True), True
        with pytest.raises(UnsafeKeyError, match="differ only by case or Unicode normalisation"):
            root.sync(Direction.DOWN, delete=True, max_workers=2, show_progress=False)
    assert local_tree(local) == before


# -- a path of the wrong kind -------------------------------------------------------------


@pytest.mark.reliability("A local file where a directory is expected, and the reverse: one error (S3)", group=HOSTILE)
def test_local_path_of_the_wrong_kind_gives_one_error(s3, bucket, cache, tmp_path):
    put(s3, bucket, {f"d/f{i}": b"x" for i in range(23)} | {"one": b"object"})
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"mine")
    a_dir = tmp_path / "a-dir"
    write(a_dir, {"mine": b"mine"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(NotADirectoryError, match=f"{a_file} is a file, but the remote is a prefix"):
            pos3.download(f"s3://{bucket}/d", local=a_file)
        with pytest.raises(NotADirectoryError, match=f"{a_file} is a file"):
            pos3.download(f"s3://{bucket}/d", local=a_file / "sub")
        with pytest.raises(IsADirectoryError, match=f"{a_dir} is a directory, but the remote is one object"):
            pos3.download(f"s3://{bucket}/one", local=a_dir)
    assert a_file.read_bytes() == b"mine" and local_tree(a_dir) == {"mine": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-file", "cache"]


@pytest.mark.reliability(
    "An upload that would make a key both an object and a prefix fails at registration (S3)", group=HOSTILE
)
def test_upload_of_the_wrong_kind_fails_at_registration(s3, bucket, cache, tmp_path):
    put(s3, bucket, {"obj": b"object", "pre/a": b"a"})
    f = tmp_path / "file"
    f.write_bytes(b"f")
    d = tmp_path / "dir"
    write(d, {"x": b"x"})
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(IsADirectoryError, match="ending in '/'"):
            pos3.upload(f"s3://{bucket}/new/", local=f, interval=None)
        with pytest.raises(IsADirectoryError, match="pre/ is a prefix"):
            pos3.upload(f"s3://{bucket}/pre", local=f, interval=None)
        with pytest.raises(NotADirectoryError, match="an object exists at exactly that key"):
            pos3.upload(f"s3://{bucket}/obj", local=d, interval=None)
        with pytest.raises(NotADirectoryError, match="an object exists"):
            pos3.sync(f"s3://{bucket}/obj/", local=tmp_path / "other", interval=None)
    assert remote_tree(s3, bucket) == {"obj": b"object", "pre/a": b"a"}


# -- the destination bucket is checked at registration -------------------------------------


@pytest.mark.reliability("A mistyped upload bucket fails at registration, not at exit (S3)", group=HOSTILE)
@pytest.mark.parametrize("call", ["upload-dir", "upload-file", "sync-dir", "sync-file"])
def test_missing_upload_bucket_fails_at_registration(s3, bucket, cache, tmp_path, call):
    f = tmp_path / "file"
    f.write_bytes(b"f")
    local = f if call.endswith("file") else tmp_path / "dir"
    fn = pos3.upload if call.startswith("upload") else pos3.sync
    with pos3.mirror(cache_root=cache, show_progress=False):
        with pytest.raises(FileNotFoundError, match="no-such-bucket-typo"):
            fn("s3://no-such-bucket-typo/out", local=local, interval=None)
        fn(f"s3://{bucket}/not-yet/there", local=local, interval=None)  # an empty bucket, a new prefix: fine
    key = "not-yet/there" if call.endswith("file") else "not-yet/there/"
    assert list(remote_tree(s3, bucket, key)) == ([""] if call.endswith("file") else [])


# -- symlinks ------------------------------------------------------------------------------


@pytest.mark.reliability("Upload never follows a symlink out of its root (S3)", group=HOSTILE)
def test_upload_never_follows_symlinks_out_of_the_root(s3, bucket, cache, tmp_path, caplog):
    outside = tmp_path / "outside"
    write(outside, {"secret": b"secret", "dir/x": b"x"})
    local = tmp_path / "out"
    write(local, {"a": b"a", "sub/b": b"b"})
    (local / "in-root").symlink_to(local / "a")
    (local / "in-root-rel").symlink_to("sub/b")
    (local / "leak").symlink_to(outside / "secret")
    (local / "leak-rel").symlink_to("../outside/secret")
    (local / "dirlink").symlink_to(outside / "dir")
    (local / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(local / "fifo")
    with caplog.at_level(logging.WARNING, logger="pos3"), pos3.mirror(cache_root=cache, show_progress=False):
        pos3.upload(f"s3://{bucket}/out", local=local, interval=None)
    assert remote_tree(s3, bucket, "out/") == {"a": b"a", "sub/b": b"b", "in-root": b"a", "in-root-rel": b"b"}
    assert "leak" in caplog.text and "leak-rel" in caplog.text


@pytest.mark.reliability("Download never writes through a symlink (S3)", group=HOSTILE)
def test_download_never_writes_through_symlinks(s3, bucket, cache, tmp_path):
    outside = tmp_path / "outside"
    write(outside, {"target": b"untouched", "dir/x": b"untouched"})
    put(s3, bucket, {"d/f": b"remote f", "d/sub/x": b"remote x"})
    local = tmp_path / "d"
    local.mkdir()
    (local / "f").symlink_to(outside / "target")
    (local / "sub").symlink_to(outside / "dir")
    (local / "extra").symlink_to(outside / "target")
    with pos3.mirror(cache_root=cache, show_progress=False), pytest.raises(SyncError) as info:
        pos3.download(f"s3://{bucket}/d", local=local)
    assert str(local / "sub" / "x") in str(info.value) and "symlink" in str(info.value)
    assert local_tree(outside) == {"target": b"untouched", "dir/x": b"untouched"}
    assert not (local / "f").is_symlink() and (local / "f").read_bytes() == b"remote f"  # the link was replaced
    (local / "sub").unlink()
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/d", local=local)
    assert (local / "extra").is_symlink()  # a link leading outside is never listed, so never deleted
    assert local_tree(local) == {"f": b"remote f", "sub/x": b"remote x", "extra": b"untouched"}
    assert local_tree(outside) == {"target": b"untouched", "dir/x": b"untouched"}
    (local / "inside").symlink_to(local / "f")  # a link to a file inside the root is listed like a file
    with pos3.mirror(cache_root=cache, show_progress=False):
        pos3.download(f"s3://{bucket}/d", local=local)
    assert not (local / "inside").exists() and (local / "f").read_bytes() == b"remote f"  # the link was removed


# -- unreadable files, a full disk (in child processes) ----------------------------------------


def run_child(script: str, env: dict[str, str], unprivileged: bool = False) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter; ``unprivileged`` drops root's power to bypass file permissions."""
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        if shutil.which("setpriv") is None:
            pytest.fail("running as root: setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE for this test")
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.reliability(
    "Unreadable local files and directories: one error naming them, nothing deleted (S3, without root's DAC override)",
    group=HOSTILE,
)
def test_unreadable_local_files(s3, s3_server, bucket, tmp_path):
    local = tmp_path / "out"
    write(local, {"ok": b"ok", "locked": b"secret", "dir/inner": b"inner"})
    (local / "locked").chmod(0o000)
    (local / "dir").chmod(0o000)
    put(s3, bucket, {"out/stale": b"old"})
    script = f"""
        import pos3, sys
        try:
            with pos3.mirror(cache_root={str(tmp_path / "cache")!r}, show_progress=False):
                pos3.upload("s3://{bucket}/out", local={str(local)!r}, interval=None)
        except Exception as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
        """
    res = run_child(script, s3_server.env(), unprivileged=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "PermissionError" in res.stdout and str(local / "dir") in res.stdout  # never taken for an empty directory
    assert remote_tree(s3, bucket, "out/") == {"stale": b"old"}  # nothing deleted on a partial view
    (local / "dir").chmod(0o755)
    res = run_child(script, s3_server.env(), unprivileged=True)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "SyncError" in res.stdout and str(local / "locked") in res.stdout and "Permission denied" in res.stdout
    assert remote_tree(s3, bucket, "out/") == {"ok": b"ok", "stale": b"old", "dir/inner": b"inner"}


@pytest.mark.reliability("A full disk (RLIMIT_FSIZE): one error, no partial file, nothing deleted (S3)", group=HOSTILE)
@pytest.mark.parametrize("client", ["crt", "boto3"])
def test_full_disk_leaves_no_partial_file(s3, s3_server, bucket, tmp_path, client):
    big = os.urandom(3 * 1024 * 1024)
    put(s3, bucket, {"d/big": big, "d/small": b"small"})
    local = tmp_path / "d"
    write(local, {"keep": b"keep"})
    script = f"""
        import resource, signal, sys
        import pos3
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        pos3.register_profile("p", local_name="p", transfer_client={client!r})
        with pos3.mirror(cache_root={str(tmp_path / "cache")!r}, show_progress=False):
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
            try:
                pos3.download("s3://{bucket}/d", local={str(local)!r}, profile="p")
            except Exception as exc:
                print(type(exc).__name__, exc)
                sys.exit(3)
        """
    res = run_child(script, s3_server.env())
    assert res.returncode == 3, res.stdout + res.stderr
    assert "SyncError" in res.stdout and str(local / "big") in res.stdout
    assert local_tree(local) == {"keep": b"keep", "small": b"small"}  # no partial file, no temp file, no delete
    assert files_under(local) == {"keep", "small"}


# -- secrets and access ---------------------------------------------------------------------


class RecordingProxy:
    """A TCP relay in front of a server that records every byte the client sends."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.sent = bytearray()
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.reliability("A public profile never sends credentials on the wire (S3, CRT and boto3)", group="Secrets")
@pytest.mark.parametrize("client", ["crt", "boto3"])
def test_public_profile_sends_no_credentials(s3_server, s3, public_bucket, cache, tmp_path, client):
    public = public_bucket
    s3.put_object(Bucket=public, Key=f"pub-{client}/a", Body=b"public data")
    proxy = RecordingProxy(s3_server.endpoint)
    try:
        profile = pos3.Profile(
            local_name="pub",
            endpoint=proxy.url,
            public=True,
            options={"transfer_client": client, "access_key_id": "AKIACANARY", "secret_access_key": "canary-secret"},
        )
        with pos3.mirror(cache_root=cache, show_progress=False):
            path = pos3.download(f"s3://{public}/pub-{client}", profile=profile)
            assert pos3.ls(f"s3://{public}/pub-{client}/", profile=profile) == [f"s3://{public}/pub-{client}/a"]
        assert (path / "a").read_bytes() == b"public data"
    finally:
        proxy.close()
    wire = bytes(proxy.sent).lower()
    assert b"get /" in wire  # requests did go through the proxy
    for secret in (b"authorization:", b"x-amz-credential", b"x-amz-security-token", b"x-amz-signature"):
        assert secret not in wire
    for value in (s3_server.access_key, "AKIACANARY", "canary-secret"):
        assert value.lower().encode() not in wire  # the environment's keys and the profile's are both present


@pytest.mark.parametrize("client", ["crt", "boto3"])
def test_the_recording_proxy_sees_credentials_when_they_are_sent(s3_server, s3, public_bucket, cache, client):
    """The control for the test above: the same requests with a signing profile do show credentials."""
    s3.put_object(Bucket=s3_server.public_bucket, Key=f"signed-{client}/a", Body=b"data")
    proxy = RecordingProxy(s3_server.endpoint)
    try:
        profile = pos3.Profile(local_name="signed", endpoint=proxy.url, options={"transfer_client": client})
        with pos3.mirror(cache_root=cache, show_progress=False):
            pos3.download(f"s3://{s3_server.public_bucket}/signed-{client}", profile=profile)
    finally:
        proxy.close()
    wire = bytes(proxy.sent).lower()
    assert b"authorization:" in wire and s3_server.access_key.lower().encode() in wire


@pytest.mark.reliability("Cache files and directories follow the umask, never world-writable (S3)", group="Secrets")
@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077, 0o000])
def test_cache_follows_the_umask(s3, s3_server, bucket, tmp_path, mask):
    put(s3, bucket, {"d/a": b"a", "d/sub/b": b"b"})
    cache = tmp_path / "cache"
    script = f"""
        import os, stat
        import pos3
        from pos3.wrappers import WrappedStore

        os.umask({mask:#o})
        seen = []

        class Spy(WrappedStore):
            def start_get(self, key, dest, size=None):
                return None  # every get on a worker, through get() below

            def get(self, key, dest, size=None):
                meta = self.inner.get(key, dest, size)
                seen.append(stat.S_IMODE(os.stat(dest).st_mode))  # the temporary file, before its rename
                return meta

        with pos3.mirror(cache_root={str(cache)!r}, show_progress=False) as m:
            m.resolver.wrap = Spy  # every store this mirror creates from here on
            pos3.download("s3://{bucket}/d")
            pos3.upload("s3://{bucket}/up", interval=None)
        print(" ".join(oct(m) for m in seen))
        """
    res = run_child(script, s3_server.env())
    assert res.returncode == 0, res.stderr
    temp_modes = [int(m, 8) for m in res.stdout.split()]
    assert len(temp_modes) == 2
    allowed = 0o777 & ~mask & ~stat.S_IWOTH
    created = [cache, *cache.rglob("*")]
    assert any(p.name == ".pos3-state" for p in created) and any(p.suffix == ".lock" for p in created)
    for p in created:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode & ~allowed == 0, f"{p} has mode {mode:o} under umask {mask:03o}"
        expected = (0o777 if p.is_dir() else 0o666) & ~mask & ~stat.S_IWOTH
        if p.is_dir() or p.parent.name != ".pos3-state":  # SQLite's own files use 0o644 under the umask
            assert mode == expected, f"{p} has mode {mode:o}, expected {expected:o}"
    for mode in temp_modes:
        assert mode & ~allowed == 0, f"a temporary file had mode {mode:o} under umask {mask:03o}"
