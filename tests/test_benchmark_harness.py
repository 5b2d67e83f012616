"""The benchmark harness (benchmarks/) keeps working: its verification catches wrong
results, and a tiny small-file workload runs end to end for pos3 alone (no peer is installed)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks`

from benchmarks import backends, run, tools, workloads  # noqa: E402
from benchmarks.workloads import Tree, copy_tree, verify_local, verify_remote, write_tree  # noqa: E402

pytest_plugins = ["emulator_fixtures"]


@pytest.fixture
def golden(tmp_path: Path) -> Tree:
    root = tmp_path / "golden"
    write_tree(root, workloads.small_files(6, 2, 64))
    return Tree.load(root)


@pytest.fixture
def backend(s3_server) -> backends.S3Backend:
    return backends.S3Backend(s3_server.endpoint, s3_server.access_key, s3_server.secret_key)


def test_verify_local_catches_every_difference(tmp_path: Path, golden: Tree) -> None:
    copy = tmp_path / "copy"
    copy_tree(golden.root, copy)
    problems, verified = verify_local(copy, golden)
    assert problems == []

    first, second, *_ = sorted(golden.md5)
    path = copy / first
    st = path.stat()
    path.write_bytes(b"x" * st.st_size)  # same size, and the old mtime put back: ctime still tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    (copy / second).unlink()
    (copy / "extra.bin").write_bytes(b"!")
    problems, _ = verify_local(copy, golden, verified)
    assert sorted(problems) == sorted([f"content differs: {first}", f"missing {second}", "unexpected extra.bin"])


def test_verify_local_rechecks_files_whose_golden_changed(tmp_path: Path, golden: Tree) -> None:
    copy = tmp_path / "copy"
    copy_tree(golden.root, copy)
    _, verified = verify_local(copy, golden)
    rel = sorted(golden.md5)[0]
    edited_root = tmp_path / "edited"
    copy_tree(golden.root, edited_root)
    (edited_root / rel).write_bytes(b"y" * 64)
    problems, _ = verify_local(copy, Tree.load(edited_root), verified)  # the copy is untouched, the target moved
    assert problems == [f"content differs: {rel}"]


def test_verify_remote_catches_every_difference(backend, s3, bucket: str, golden: Tree) -> None:
    remote = backend.remote(bucket, "v")
    backend.seed(golden.root, remote)
    assert verify_remote(backend, remote, golden) == []

    first, second, *_ = sorted(golden.md5)
    s3.put_object(Bucket=bucket, Key="v/", Body=b"")  # directory markers are tolerated
    s3.put_object(Bucket=bucket, Key="v/d000/", Body=b"")
    assert verify_remote(backend, remote, golden) == []
    backend.put(remote, first, b"y" * 64)
    backend.delete(remote, [second])
    backend.put(remote, "extra.bin", b"z")
    problems = verify_remote(backend, remote, golden)
    assert sorted(problems) == sorted([f"content differs: {first}", f"missing {second}", "unexpected extra.bin"])


def test_verify_remote_checks_multipart_objects_without_reading_them(backend, s3, bucket, tmp_path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    root = tmp_path / "big"
    write_tree(root, {"big.bin": os.urandom(11 << 20)})
    golden = Tree.load(root)
    config = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    s3.upload_file(str(root / "big.bin"), bucket, "m/big.bin", Config=config)
    remote = backend.remote(bucket, "m")

    def no_reading(*args):
        raise AssertionError("a matching multipart object should not be read back")

    monkeypatch.setattr(backend, "md5_of", no_reading)
    assert verify_remote(backend, remote, golden) == []
    monkeypatch.undo()
    write_tree(root, {"big.bin": os.urandom(11 << 20)})  # same size, other bytes
    assert verify_remote(backend, remote, Tree.load(root)) == ["content differs: big.bin"]


@dataclass(frozen=True)
class DoesNothing(tools.Tool):
    """A 'tool' that exits 0 at once: every step that should move data must come out WRONG."""

    def upload(self, local, remote, work, backend):
        return tools.Command(["true"])

    def download(self, remote, local, work, backend):
        return tools.Command(["true"])

    def sync(self, src, dst, work, backend):
        return tools.Command(["true"])


def test_small_workload_end_to_end(backend, bucket: str, tmp_path: Path) -> None:
    ctx = workloads.Context(backend, bucket, tmp_path / "data", tmp_path / "work")
    wl = workloads.SmallFiles(n_files=20, n_dirs=2, size=256, n_edit=3, n_new=2)
    pos3 = tools.Pos3("pos3", "pos3", stateful=True, python=sys.executable, workers=4)
    runner = run.Runner(
        backend,
        [pos3, DoesNothing("nothing", "pos3")],
        tmp_path / "work",
        1,
        1,
        120,
        tools.base_env(tmp_path),
        quiet=True,
    )
    results = runner.run(wl, ctx)

    ours = [r for r in results if r.tool == "pos3"]
    assert [r.step for r in ours] == [s.name for s in wl.steps]
    assert [(r.step, r.status, r.detail) for r in ours if r.status != "ok"] == []
    assert all(r.seconds > 0 and r.rss_kib > 1000 for r in ours)

    other = {r.step: r.status for r in results if r.tool == "nothing"}
    assert other["upload to an empty prefix"] == "WRONG"
    assert other["no-op upload"] == "skipped"  # its precondition was never met
    assert other["download to an empty dir"] == "WRONG"

    md = run.table(results, ["pos3", "nothing"])
    assert md.count("**WRONG**") == 2 and "| pos3 ÷ best peer |" in md


@pytest.fixture(params=["gcs", "azure"])
def emulator_backend(request: pytest.FixtureRequest) -> backends.Backend:
    """The harness's GCS or Azure backend on the tests' session emulator."""
    if request.param == "gcs":
        server = request.getfixturevalue("gcs_server")
        return backends.GCSBackend(server.endpoint, server.project)
    server = request.getfixturevalue("azure_server")
    return backends.AzureBackend(server.endpoint, server.account_name, server.account_key, server.connection_string)


def test_emulator_backends_point_rclone_and_pos3_at_the_emulator_and_verify(emulator_backend, golden: Tree) -> None:
    b = emulator_backend
    env = b.env()
    if b.name == "gcs":
        assert env["RCLONE_CONFIG_BENCH_TYPE"] == "google cloud storage"
        assert env["RCLONE_CONFIG_BENCH_ENDPOINT"] == env["STORAGE_EMULATOR_HOST"] + "/storage/v1/"
    else:
        assert env["RCLONE_CONFIG_BENCH_TYPE"] == "azureblob"
        assert env["RCLONE_CONFIG_BENCH_ENDPOINT"] in env["AZURE_STORAGE_CONNECTION_STRING"]
    assert b.only_tools == {"rclone-32", "pos3"}
    bucket = f"bench-harness-{os.getpid()}"
    b.create_bucket(bucket)
    remote = b.remote(bucket, "v")
    b.seed(golden.root, remote)
    assert verify_remote(b, remote, golden) == []
    first, second, *_ = sorted(golden.md5)
    b.put(remote, first, b"y" * 64)  # same size, other bytes
    b.delete(remote, [second])
    b.put(remote, "extra.bin", b"z")
    problems = verify_remote(b, remote, golden)
    assert sorted(problems) == sorted([f"content differs: {first}", f"missing {second}", "unexpected extra.bin"])


def test_table_names_the_single_peer() -> None:
    results = [run.Result("gcs", "w", "s", "rclone-32", 0, 2.0), run.Result("gcs", "w", "s", "pos3", 0, 1.0)]
    md = run.table(results, ["rclone-32", "pos3"], versus="rclone-32")
    assert "| pos3 ÷ rclone-32 |" in md and "0.4.0" not in md and "| 0.50× |" in md
    assert "| pos3 ÷ best peer | 0.4.0 ÷ best peer |" in run.table(results, ["rclone-32", "pos3"])


def test_cross_workload_end_to_end(s3_server, gcs_server, tmp_path: Path) -> None:
    """S3 -> GCS through `pos3 sync` comes out right for both trees; a tool that does nothing is WRONG."""
    src = backends.S3Backend(s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    dst = backends.GCSBackend(gcs_server.endpoint, gcs_server.project)
    cross = backends.CrossBackend("s3-gcs", src, dst)
    assert cross.only_tools == {"rclone-32", "pos3"}
    cross.only_tools = None  # let the do-nothing row run too
    env = cross.env()
    assert env["RCLONE_CONFIG_SRC_TYPE"] == "s3" and env["RCLONE_CONFIG_DST_TYPE"] == "google cloud storage"
    assert env["STORAGE_EMULATOR_HOST"] == gcs_server.endpoint and env["AWS_ENDPOINT_URL"] == s3_server.endpoint
    bucket = f"bench-cross-{os.getpid()}"
    cross.create_bucket(bucket)
    ctx = workloads.Context(cross, bucket, tmp_path / "data", tmp_path / "work")
    pos3 = tools.Pos3("pos3", "pos3", stateful=True, python=sys.executable, workers=4)
    runner = run.Runner(
        cross, [pos3, DoesNothing("nothing", "pos3")], tmp_path / "work", 1, 1, 120, tools.base_env(tmp_path), True
    )
    for wl in (workloads.CrossSync("small", (12, 3, 128)), workloads.CrossSync("large", mib=1)):
        results = runner.run(wl, ctx)
        ours = [(r.step, r.status, r.detail) for r in results if r.tool == "pos3"]
        assert ours == [(step.name, "ok", "") for step in wl.steps]
        assert "--delete" in next(r.command for r in results if r.tool == "pos3")
        other = {r.step: r.status for r in results if r.tool == "nothing"}
        assert other == {"sync to an empty prefix": "WRONG", "no-op sync": "skipped"}
    assert [obj.rel for obj in dst.list(dst.remote(f"{bucket}-small-pos3-0", "cross/small"))] == sorted(
        workloads.small_files(12, 3, 128)
    )
    assert list(dst.list(dst.remote(f"{bucket}-large-pos3-0", "cross/large"))) == []  # freed after its no-op step


def test_each_backend_runs_the_workloads_it_supports() -> None:
    def names(backend: str, workloads: str = "small,large,listing,cross") -> list[str]:
        args = run.parse_args(["--workloads", workloads, "--backends", backend])
        b = object.__new__({"s3": backends.S3Backend, "gcs": backends.GCSBackend}[backend])
        return [w.name for w in run.make_workloads(args, b)]

    assert names("s3") == ["small", "large", "listing"]
    assert names("gcs") == ["small", "large"] and names("gcs", "large") == ["large"]
    cross = backends.CrossBackend("s3-gcs", object.__new__(backends.S3Backend), object.__new__(backends.GCSBackend))
    args = run.parse_args(["--backends", "s3-gcs"])
    assert [w.name for w in run.make_workloads(args, cross)] == ["cross-small", "cross-large"]


def test_write_results_keeps_the_many_processes_section() -> None:
    page = "# R\n\n### S3\n\nold table\n\n### Many processes, one cache\n\n| ranks |\n|---|\n\n### Later\n\nx\n"
    assert run.kept_sections(page) == "\n### Many processes, one cache\n\n| ranks |\n|---|\n\n"
    assert run.kept_sections(run.RESULTS.read_text()).startswith("\n### Many processes")
