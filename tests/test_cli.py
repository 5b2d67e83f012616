"""The ``pos3`` console script, run in a subprocess against SeaweedFS, fake-gcs-server and Azurite.

Each store is reached through its default profile, configured by the environment
the subprocess inherits (AWS_* from the S3 fixture, STORAGE_EMULATOR_HOST,
AZURE_STORAGE_CONNECTION_STRING).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import local_tree, put, remote_tree, write
from pos3 import cli

pytest_plugins = ["emulator_fixtures"]

POS3 = Path(sys.executable).with_name("pos3")


def pos3(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script; the caller checks the exit code."""
    cmd = [str(POS3), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


def ok(*args: object, env: dict[str, str] | None = None) -> str:
    r = pos3(*args, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def s3_state(s3, bucket: str) -> dict[str, tuple[str, bytes]]:
    """{key: (ETag, content)} of every object: any write changes it."""
    tree = remote_tree(s3, bucket)
    etags = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    return {k: (etags[k], v) for k, v in tree.items()}


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` with its mtime, inode and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[p.relative_to(root).as_posix()] = (st.st_mtime_ns, st.st_ino, p.read_bytes() if p.is_file() else b"")
    return out


# -- help ------------------------------------------------------------------------------


def test_help_shows_every_command_with_examples():
    r = subprocess.run([sys.executable, "-m", "pos3", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for word in ("ls", "download", "upload", "sync", "examples:", "exit codes", "d=$(pos3 download"):
        assert word in r.stdout


@pytest.mark.parametrize("command", ["ls", "download", "upload", "sync"])
def test_each_command_has_complete_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"pos3 {command}" in out
    for option in ("--profile", "--cache-root", "--workers", "--no-progress", "--json", "--debug"):
        assert option in out
    assert "--max-upload-bytes-per-second" in out and "--max-download-bytes-per-second" in out
    if command != "ls":
        for option in ("--dry-run", "--delete", "--exclude", "OFF by default"):
            assert option in out


# -- output and exit codes ---------------------------------------------------------


def test_download_prints_only_the_local_path(s3, bucket, tmp_path):
    put(s3, bucket, {"data/a.txt": b"a", "data/sub/b.txt": b"bb"})
    cache = tmp_path / "cache"
    r = pos3("download", f"s3://{bucket}/data", "--cache-root", cache, "--progress")
    assert r.returncode == 0, r.stderr
    path = cache / "_" / bucket / "data"
    assert r.stdout == f"{path}\n"
    assert bucket in r.stderr  # the progress bar (naming the URL) went to stderr
    assert local_tree(path) == {"a.txt": b"a", "sub/b.txt": b"bb"}
    write(path, {"c.txt": b"c"})  # upload's source defaults to that same cache path
    out = ok("upload", "-n", f"s3://{bucket}/data", "--cache-root", cache)
    assert out == f"(dryrun) upload: {path}/c.txt to s3://{bucket}/data/c.txt\n"

    out = ok("download", f"s3://{bucket}/data/a.txt", "--local", tmp_path / "one.txt", "--json")
    assert json.loads(out) == {"path": str(tmp_path / "one.txt")}
    assert (tmp_path / "one.txt").read_bytes() == b"a"


def test_usage_errors_exit_2_with_one_line(s3, bucket, tmp_path):
    cases = {
        ("download", "not-a-url"): "must be a URL",
        ("download", "s3://"): "no bucket",
        ("ls", f"s3://nobody@{bucket}/x"): "Unknown profile 'nobody'",
        ("ls", "nosuch://bucket/key"): "No store is registered for nosuch://",
        ("ls", f"s3://@{bucket}/x"): "empty profile name",
        ("upload", f"s3://:x@{bucket}/x", "--local", tmp_path): "a password in a URL is not supported",
        ("sync", tmp_path, "gs://@b/x"): "empty profile name",
        ("sync", "az://u:p@c/x", tmp_path / "d"): "a password in a URL is not supported",
        ("download", f"s3://{bucket}/x", "--profile", "nobody"): "Unknown profile 'nobody'",
        ("upload", f"s3://{bucket}/x", "--workers", "0"): "must be at least 1",
        ("sync", f"s3://{bucket}/a", f"s3://{bucket}/a/b"): "overlap",
        ("sync", tmp_path / "a", tmp_path / "a" / "b"): "overlap",
    }
    for args, message in cases.items():
        r = pos3(*args, "--cache-root", tmp_path / "cache")
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
        if args[-1] != "0":  # argparse adds its usage line; ours are one line
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "cache").exists()


def test_failures_exit_1_and_list_every_failed_file(s3, bucket, tmp_path):
    r = pos3("download", f"s3://{bucket}/missing", "--local", tmp_path / "d", "--cache-root", tmp_path / "c")
    assert r.returncode == 1
    assert r.stderr == f"pos3 download: No such remote: s3://{bucket}/missing (no object or prefix of that name)\n"
    assert not (tmp_path / "d").exists()

    r = pos3("upload", "s3://no-such-bucket-here/x", "--local", tmp_path, "--cache-root", tmp_path / "c")
    assert r.returncode == 1
    assert r.stderr == "pos3 upload: Listing s3://no-such-bucket-here/x/: not found (NoSuchBucket)\n"

    # Two files cannot be written (a directory is in the way); the third one is.
    put(s3, bucket, {"d/a": b"1", "d/b": b"2", "d/c": b"3"})
    write(tmp_path / "dst", {"a/keep": b"", "b/keep": b""})
    r = pos3("download", f"s3://{bucket}/d", "--local", tmp_path / "dst", "--cache-root", tmp_path / "c")
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == f"pos3 download: ↓ s3://{bucket}/d: 2 file(s) failed"
    assert sorted(line.split(": ")[0].strip() for line in lines[1:]) == [str(tmp_path / "dst" / n) for n in "ab"]
    assert (tmp_path / "dst" / "c").read_bytes() == b"3"

    r = pos3("upload", f"s3://{bucket}/x", "--local", tmp_path / "nothing", "--cache-root", tmp_path / "c")
    assert r.returncode == 1
    assert r.stderr == f"pos3 upload: No such local source: {tmp_path / 'nothing'}\n"

    r = pos3("ls", f"s3://{bucket}/missing/", "--debug")  # an empty listing is not an error
    assert r.returncode == 0 and r.stdout == ""
    r = pos3("ls", tmp_path / "nothing", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr  # --debug shows where
    assert r.stderr.rstrip().splitlines()[-1] == f"pos3 ls: No such local path: {tmp_path / 'nothing'}"


def test_sigterm_stops_a_download_with_status_143_and_says_so(s3, bucket, tmp_path):
    """A download has no uploads to finish: SIGTERM stops it (no 'final uploads' message), nothing partial."""
    put(s3, bucket, {"big/file.bin": b"\1" * (8 << 20)})
    dest = tmp_path / "dest"
    cmd = [sys.executable, "-m", "pos3", "download", f"s3://{bucket}/big", "--local", str(dest)]
    cmd += ["--cache-root", str(tmp_path / "c"), "--max-download-bytes-per-second", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".pos3") for p in dest.glob("*")):  # the transfer is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopping (no uploads to finish)" in err and "final uploads" not in err, err
    assert "Traceback" not in err and out == ""
    # The copy in flight either finished (whole, under its name) or left nothing behind.
    assert [p.name for p in dest.glob("*")] in ([], ["file.bin"])
    assert not (dest / "file.bin").exists() or (dest / "file.bin").stat().st_size == 8 << 20


def test_bandwidth_flags_reach_the_mirror(s3, bucket, tmp_path):
    """100 KB at 25 KB/s takes at least (100 KB - one 2.5 KB burst) / 25 KB/s = 3.9 s; unlimited, a fraction of that."""
    put(s3, bucket, {"d/a": os.urandom(50_000), "d/b": os.urandom(50_000)})
    cache = ["--cache-root", tmp_path / "cache"]
    start = time.monotonic()
    ok("download", f"s3://{bucket}/d", "--local", tmp_path / "d", "--max-download-bytes-per-second", "25000", *cache)
    assert time.monotonic() - start >= 3.9
    assert local_tree(tmp_path / "d") == remote_tree(s3, bucket, "d/")


def test_warnings_go_to_stderr_prefixed_once(tmp_path):
    """A skipped symlink is one warning line on stderr, 'pos3: ' once; stdout stays empty."""
    write(tmp_path / "src", {"a": b"a"})
    (tmp_path / "outside").write_bytes(b"o")
    (tmp_path / "src" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "remote").mkdir()
    r = pos3("upload", f"file://{tmp_path}/remote/p", "--local", tmp_path / "src", "--cache-root", tmp_path / "c")
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"pos3: skipping {tmp_path / 'src' / 'link'}: a symlink leading outside {tmp_path / 'src'}"
    ]
    assert local_tree(tmp_path / "remote" / "p") == {"a": b"a"}


# -- dry runs ------------------------------------------------------------------------


def test_dry_runs_change_nothing(s3, bucket, tmp_path):
    put(s3, bucket, {"d/new": b"n", "d/longer": b"12345", "d/same": b"s", "d/only-remote": b"r"})
    local = tmp_path / "local"
    write(local, {"longer": b"1234", "same": b"s", "only-local": b"x", "skip.tmp": b"t"})
    cache = tmp_path / "cache"
    before = s3_state(s3, bucket), snapshot(local)
    url = f"s3://{bucket}/d"

    out = ok("download", "-n", url, "--local", local, "--delete", "--exclude", "*.tmp", "--cache-root", cache)
    assert out.splitlines() == [
        f"(dryrun) download: {url}/longer to {local}/longer",
        f"(dryrun) download: {url}/new to {local}/new",
        f"(dryrun) download: {url}/only-remote to {local}/only-remote",
        f"(dryrun) delete: {local}/only-local",
    ]
    out = ok("sync", url, local, "--dry-run", "--cache-root", cache)  # no --delete: no delete lines
    assert len(out.splitlines()) == 3 and "delete" not in out

    out = ok("upload", "-n", url, "--local", local, "--delete", "--json", "--cache-root", cache)
    assert [json.loads(line) for line in out.splitlines()] == [
        {"action": "upload", "src": f"{local}/longer", "dst": f"{url}/longer", "size": 4, "reason": "size differs"},
        {"action": "upload", "src": f"{local}/only-local", "dst": f"{url}/only-local", "size": 1, "reason": "new"},
        {"action": "upload", "src": f"{local}/skip.tmp", "dst": f"{url}/skip.tmp", "size": 1, "reason": "new"},
        {"action": "delete", "src": None, "dst": f"{url}/new", "size": 0, "reason": "deleted at source"},
        {"action": "delete", "src": None, "dst": f"{url}/only-remote", "size": 0, "reason": "deleted at source"},
    ]
    out = ok("sync", "-n", local, f"s3://{bucket}/elsewhere", "--cache-root", cache)
    assert len(out.splitlines()) == 4

    assert (s3_state(s3, bucket), snapshot(local)) == before
    assert not cache.exists()

    ok("download", url, "--local", local, "--delete", "--exclude", "*.tmp", "--cache-root", cache)
    assert local_tree(local) == {"new": b"n", "longer": b"12345", "same": b"s", "only-remote": b"r", "skip.tmp": b"t"}
    assert ok("download", "-n", url, "--local", local, "--delete", "--exclude", "*.tmp", "--cache-root", cache) == ""


def test_delete_guards_hold_in_dry_runs_and_real_runs(s3, bucket, tmp_path):
    put(s3, bucket, {"d/a": b"a", "d/b": b"b"})
    (tmp_path / "empty").mkdir()
    cache = ["--cache-root", tmp_path / "cache"]
    url = f"s3://{bucket}/d"
    r = pos3("upload", "-n", url, "--local", tmp_path / "empty", "--delete", *cache)
    assert r.returncode == 1 and "the source has no files" in r.stderr and r.stdout == ""
    out = ok("upload", "-n", url, "--local", tmp_path / "empty", "--delete", "--allow-wipe", *cache)
    assert out.splitlines() == [f"(dryrun) delete: {url}/a", f"(dryrun) delete: {url}/b"]
    r = pos3("sync", tmp_path / "empty", url, "--delete", "--allow-wipe", "--max-delete", "1", *cache)
    assert r.returncode == 1 and "max_delete=1" in r.stderr
    assert remote_tree(s3, bucket) == {"d/a": b"a", "d/b": b"b"}


# -- store to store ------------------------------------------------------------------


def cloud_env(gcs_server, azure_server) -> dict[str, str]:
    return {**os.environ, **gcs_server.env(), **azure_server.env()}


def gcs_tree(gcs, bucket: str, prefix: str) -> dict[str, bytes]:
    return {b.name[len(prefix) :]: b.download_as_bytes() for b in gcs.list_blobs(bucket, prefix=prefix)}


def az_tree(az, container: str, prefix: str) -> dict[str, bytes]:
    c = az.get_container_client(container)
    return {b.name[len(prefix) :]: c.download_blob(b.name).readall() for b in c.list_blobs(name_starts_with=prefix)}


def test_sync_across_stores_s3_to_gs_to_az(
    s3, bucket, gcs, gcs_bucket, gcs_server, az, az_container, azure_server, tmp_path
):
    env = cloud_env(gcs_server, azure_server)
    cache = ["--cache-root", tmp_path / "cache"]
    files = {"a": b"aaa", "empty/": b"", "sub/b": b"bb", "sub/deep/c": b"c" * 100_000}  # a directory marker too
    put(s3, bucket, {f"data/{k}": v for k, v in files.items()})
    az.get_container_client(az_container).upload_blob("copy/stale", b"old")
    s3_url, gs_url, az_url = f"s3://{bucket}/data", f"gs://{gcs_bucket}/copy", f"az://{az_container}/copy"

    assert ok("sync", s3_url, gs_url, *cache, env=env) == ""
    assert gcs_tree(gcs, gcs_bucket, "copy/") == files
    assert ok("sync", gs_url, az_url, "--delete", *cache, env=env) == ""
    assert az_tree(az, az_container, "copy/") == files  # the stale blob was deleted

    # Nothing changed: an empty plan. A same-size rewrite at the source: one copy, found by MD5.
    assert ok("sync", "-n", s3_url, gs_url, "--delete", *cache, env=env) == ""
    put(s3, bucket, {"data/a": b"AAA"})
    before = gcs_tree(gcs, gcs_bucket, "copy/")
    out = ok("sync", "-n", "--json", s3_url, gs_url, "--delete", *cache, env=env)
    assert [json.loads(line) for line in out.splitlines()] == [
        {"action": "copy", "src": f"{s3_url}/a", "dst": f"{gs_url}/a", "size": 3, "reason": "content differs"}
    ]
    assert gcs_tree(gcs, gcs_bucket, "copy/") == before
    ok("sync", s3_url, gs_url, *cache, env=env)
    assert gcs_tree(gcs, gcs_bucket, "copy/")["a"] == b"AAA"
    assert list((tmp_path / "cache" / ".pos3-relay").iterdir()) == []  # nothing left in the staging directory

    # Equal content with no record (another tool copied it): proven by MD5 on both sides, not copied.
    gcs.bucket(gcs_bucket).blob("other/a").upload_from_string(b"AAA")
    out = ok("sync", "-n", f"s3://{bucket}/data/a", f"gs://{gcs_bucket}/other/a", *cache, env=env)
    assert out == ""
    ok("sync", f"s3://{bucket}/data/sub/b", f"gs://{gcs_bucket}/single/", *cache, env=env)  # into a "directory"
    assert gcs_tree(gcs, gcs_bucket, "single/") == {"b": b"bb"}
    r = pos3("sync", f"s3://{bucket}/data/none", f"gs://{gcs_bucket}/x", *cache, env=env)
    assert r.returncode == 1 and "No such remote" in r.stderr


def test_two_profiles_in_one_command_from_the_profiles_file(
    s3, s3_server, bucket, gcs, gcs_server, gcs_bucket, tmp_path
):
    """`s3://NAME@bucket` and `gs://NAME@bucket` pick profiles from profiles.toml; nothing else reaches the servers."""
    (tmp_path / "profiles.toml").write_text(
        f'[profiles.weed]\nendpoint = "{s3_server.endpoint}"\nregion = "us-east-1"\ncredentials_file = "weed.creds"\n'
        f'[profiles.fakegcs]\nendpoint = "{gcs_server.endpoint}"\npublic = true\n'
    )
    (tmp_path / "weed.creds").write_text(
        f"[weed]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["POS3_PROFILES_FILE"] = str(tmp_path / "profiles.toml")
    put(s3, bucket, {"data/a": b"a", "data/b/c": b"c"})
    cache = ["--cache-root", tmp_path / "cache"]

    r = pos3("sync", "-v", f"s3://weed@{bucket}/data", f"gs://fakegcs@{gcs_bucket}/copy", *cache, env=env)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert gcs_tree(gcs, gcs_bucket, "copy/") == {"a": b"a", "b/c": b"c"}
    # log lines show where the data went, never the profile names (README: Profiles in URLs)
    assert r.stderr == f"pos3: s3://{bucket}/data → gs://{gcs_bucket}/copy: 2 copied, 0 deleted\n"
    write(tmp_path / "out", {"x": b"x"})
    r = pos3("upload", "-v", f"s3://weed@{bucket}/up", "--local", tmp_path / "out", *cache, env=env)
    assert r.returncode == 0 and r.stderr == f"pos3: {tmp_path / 'out'} → s3://{bucket}/up: 1 copied, 0 deleted\n"
    out = ok("ls", "-r", f"gs://{gcs_bucket}/copy", "--profile", "fakegcs", *cache, env=env)
    assert out.splitlines() == [f"gs://{gcs_bucket}/copy/a", f"gs://{gcs_bucket}/copy/b/c"]


# -- every scheme, every command -----------------------------------------------------


@pytest.fixture(params=["s3", "gs", "az", "file"])
def remote(request, tmp_path) -> tuple[str, dict[str, str]]:
    """A fresh remote prefix URL of each scheme, and the environment reaching it."""
    env = dict(os.environ)
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('bucket')}/p", {**env, **request.getfixturevalue("s3_server").env()}
    if request.param == "gs":
        request.getfixturevalue("gcs")
        return f"gs://{request.getfixturevalue('gcs_bucket')}/p", {**env, **request.getfixturevalue("gcs_server").env()}
    if request.param == "az":
        request.getfixturevalue("az")
        url = f"az://{request.getfixturevalue('az_container')}/p"
        return url, {**env, **request.getfixturevalue("azure_server").env()}
    (tmp_path / "remote").mkdir()
    return f"file://{tmp_path}/remote/p", env


def test_every_command_on_every_scheme(remote, tmp_path):
    url, env = remote
    cache = ["--cache-root", tmp_path / "cache"]
    write(tmp_path / "src", {"a.txt": b"a", "sub/b.txt": b"bb"})
    (tmp_path / "src" / "empty").mkdir()  # a directory marker, both ways

    assert ok("upload", url, "--local", tmp_path / "src", *cache, env=env) == ""
    assert ok("ls", url, *cache, env=env).splitlines() == [f"{url}/a.txt", f"{url}/empty/", f"{url}/sub/"]
    listed = ok("ls", "-r", url, *cache, env=env).splitlines()
    assert listed == [f"{url}/a.txt", f"{url}/empty/", f"{url}/sub/b.txt"]
    path = Path(ok("download", url, *cache, env=env).strip())
    assert path.is_relative_to(tmp_path / "cache") and local_tree(path) == {"a.txt": b"a", "sub/b.txt": b"bb"}
    assert (path / "empty").is_dir() and not any((path / "empty").iterdir())

    (tmp_path / "src" / "a.txt").unlink()
    (tmp_path / "src" / "empty").rmdir()  # a stale marker is deleted like a file
    assert ok("sync", tmp_path / "src", url, "--delete", *cache, env=env) == ""
    assert ok("ls", "-r", "--json", url, *cache, env=env).splitlines() == [json.dumps({"url": f"{url}/sub/b.txt"})]
    assert ok("sync", url, tmp_path / "back", *cache, env=env) == ""
    assert local_tree(tmp_path / "back") == {"sub/b.txt": b"bb"}
    assert ok("download", url, "--delete", *cache, env=env) == f"{path}\n"
    assert sorted(p.name for p in path.iterdir()) == ["sub"]  # the empty directory went with its marker


def test_local_to_local_sync_and_local_ls(tmp_path):
    write(tmp_path / "a", {"x": b"1", "d/y": b"2"})
    write(tmp_path / "b", {"old": b"o"})
    cache = ["--cache-root", tmp_path / "cache"]
    assert ok("sync", "-n", tmp_path / "a", tmp_path / "b", "--delete", *cache).splitlines() == [
        f"(dryrun) upload: {tmp_path}/a/d/y to file://{tmp_path}/b/d/y",
        f"(dryrun) upload: {tmp_path}/a/x to file://{tmp_path}/b/x",
        f"(dryrun) delete: file://{tmp_path}/b/old",
    ]
    ok("sync", tmp_path / "a", tmp_path / "b", "--delete", *cache)
    assert local_tree(tmp_path / "b") == {"x": b"1", "d/y": b"2"}
    assert ok("ls", "-r", tmp_path / "b").splitlines() == [f"{tmp_path}/b/d/y", f"{tmp_path}/b/x"]
