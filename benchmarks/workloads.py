"""Workloads: the data they generate, the steps they time, and how each result is verified.

A workload is a list of `Step`s. The runner runs every step for every tool
(one tool after another, repetition after repetition); for each it calls
``before`` once (untimed changes every tool then faces: remote edits), ``setup``
per tool (untimed: a fresh directory, a fresh prefix, local edits), then the
tool's timed command, then ``verify`` — which compares the result byte for
byte with a golden tree — and ``cleanup``.

Every tool starts every step from the same precondition: its own prefix and
directories (named after the tool and repetition), built the same way — or,
for the large listing, one directory that is put back whenever a tool
changed it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .backends import Backend, CrossBackend, Remote
from .tools import Tool

# -- golden trees -------------------------------------------------------------


@dataclass
class Tree:
    """A golden directory tree on disk and the MD5 of each file (keys are '/'-separated relative paths)."""

    root: Path
    md5: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Tree:
        return cls(root, {rel: _md5_file(root / rel) for rel in _walk(root)})


def _walk(root: Path) -> Iterator[str]:
    """Relative paths of every regular file under ``root``, sorted (directories themselves are not compared)."""
    out: list[str] = []
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    out.append(Path(e.path).relative_to(root).as_posix())
    return iter(sorted(out))


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(n * 8).to_bytes(n, "little") if n else b""


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def small_files(n_files: int, n_dirs: int, size: int, seed: int = 1) -> dict[str, bytes]:
    """``n_files`` random files of ``size`` bytes spread over ``n_dirs`` directories."""
    rng = random.Random(seed)
    return {f"d{i % n_dirs:03d}/f{i:06d}.bin": random_bytes(rng, size) for i in range(n_files)}


def edits(files: dict[str, int], n_edit: int, n_new: int, seed: int = 2) -> dict[str, bytes]:
    """Same-size new content for ``n_edit`` of ``files`` (rel -> size) plus ``n_new`` new files beside them."""
    rng = random.Random(seed)
    rels = sorted(files)
    out = {rel: random_bytes(rng, files[rel]) for rel in rng.sample(rels, min(n_edit, len(rels)))}
    dirs = sorted({rel.rsplit("/", 1)[0] for rel in rels if "/" in rel}) or [""]
    size = files[rels[0]] if rels else 1
    for i in range(n_new):
        d = dirs[i % len(dirs)]
        out[f"{d}/new{i:05d}.bin".lstrip("/")] = random_bytes(rng, size)
    return out


def copy_tree(src: Path, dst: Path) -> None:
    """A private copy of ``src`` at ``dst`` (contents, modes and mtimes)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def cached_tree(path: Path, build) -> Tree:
    """The golden tree at ``path``, built by ``build(path)`` unless a finished one is there already."""
    stamp = path.with_name(path.name + ".done")
    if not stamp.exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        build(path)
        stamp.touch()
    return Tree.load(path)


# -- verification -------------------------------------------------------------

Snapshot = dict[str, tuple[int, int, int, int]]


def snapshot(root: Path) -> Snapshot:
    """``rel -> (inode, size, mtime_ns, ctime_ns)`` for every file: any write, rename or utime changes it."""
    out: Snapshot = {}
    for rel in _walk(root) if root.exists() else ():
        st = os.lstat(root / rel)
        out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


@dataclass(frozen=True)
class Verified:
    """A directory's snapshot at the moment it was found equal to ``tree``."""

    snapshot: Snapshot
    tree: Tree


def verify_local(root: Path, golden: Tree, before: Verified | None = None) -> tuple[list[str], Verified]:
    """Problems that keep ``root`` from equalling ``golden`` byte for byte, and the new verified state.

    With ``before`` (the last verified state of ``root``) a file is read again
    only if its inode, size, mtime or ctime changed, or if its golden content
    differs from the one it was verified against: an untouched file is still
    what was verified.
    """
    snap = snapshot(root)
    problems = [f"missing {rel}" for rel in golden.md5 if rel not in snap]
    problems += [f"unexpected {rel}" for rel in snap if rel not in golden.md5]
    for rel, st in snap.items():
        want = golden.md5.get(rel)
        if want is None:
            continue
        if before is not None and before.snapshot.get(rel) == st and before.tree.md5.get(rel) == want:
            continue
        if st[1] != os.path.getsize(golden.root / rel) or _md5_file(root / rel) != want:
            problems.append(f"content differs: {rel}")
    return problems, Verified(snap, golden)


def verify_remote(backend: Backend, remote: Remote, golden: Tree) -> list[str]:
    """Problems that keep ``remote`` from equalling ``golden`` byte for byte.

    A single-part ETag is the MD5 of the stored bytes; anything else is settled
    by `Backend.same_content` (per-part MD5s, or reading the object back).
    Directory markers (empty keys ending in '/', the prefix's own included) are tolerated.
    """
    seen: set[str] = set()
    problems: list[str] = []
    for obj in backend.list(remote):
        if obj.size == 0 and (obj.rel == "" or obj.rel.endswith("/")):
            continue
        seen.add(obj.rel)
        want = golden.md5.get(obj.rel)
        if want is None:
            problems.append(f"unexpected {obj.rel}")
        elif obj.etag != want and not backend.same_content(remote, obj, golden.root / obj.rel, want):
            problems.append(f"content differs: {obj.rel}")
    problems += [f"missing {rel}" for rel in golden.md5 if rel not in seen]
    return problems


# -- steps and slots ----------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One timed (or, with ``timed=False``, preparatory) operation every tool performs."""

    name: str
    op: str  # "upload" | "download" | "sync" (store to store: `Slot.source` to `Slot.remote`)
    chain: str = ""  # steps of one chain build on each other: after a failure the rest are skipped
    timed: bool = True
    once: bool = False  # only in the first repetition (the slot is shared across repetitions)
    stateful_only: bool = False  # only for tools that keep state (see `tools.Tool.stateful`)


@dataclass
class Slot:
    """The private state of one tool in one repetition of one workload."""

    tool: Tool
    rep: int
    work: Path
    local: Path | None = None
    remote: Remote | None = None
    source: Remote | None = None  # the source of a store-to-store sync (``remote`` is its destination)
    verified: Verified | None = None  # the last verified state of ``local``
    broken: dict[str, str] = field(default_factory=dict)  # chain -> why its later steps are skipped


@dataclass
class Context:
    backend: Backend
    bucket: str
    data: Path  # golden data, kept between runs
    work: Path  # scratch space of this run


class Workload:
    """Base class: a name, steps, and the hooks described in the module docstring."""

    name = ""
    steps: list[Step] = []
    shared_slots = False  # True: one slot per tool for all repetitions

    def prepare(self, ctx: Context) -> None:
        """Generate the golden data and seed the shared remote prefixes (once, untimed)."""

    def before(self, step: Step, rep: int, ctx: Context) -> None:
        """Untimed changes every tool faces in this step (e.g. remote edits)."""

    def setup(self, step: Step, slot: Slot, ctx: Context) -> None:
        raise NotImplementedError

    def verify(self, step: Step, slot: Slot, ctx: Context) -> list[str]:
        raise NotImplementedError

    def cleanup(self, step: Step, slot: Slot, ctx: Context) -> None:
        """Free space after a verified step (optional)."""


class SmallFiles(Workload):
    """Many small files: the upload sequence, then the download sequence.

    Upload: a copy of T0 to an empty prefix, the same again (no-op), then after
    ``n_edit`` same-size edits and ``n_new`` new files locally (T1). Download:
    the shared source prefix (T0) to an empty directory, the same again, then
    after the same edits made to the source prefix (T1). The source is put back
    to T0 before the next repetition.
    """

    name = "small"
    steps = [
        Step("upload to an empty prefix", "upload", "up"),
        Step("no-op upload", "upload", "up"),
        Step("upload after edits", "upload", "up"),
        Step("download to an empty dir", "download", "down"),
        Step("no-op download", "download", "down"),
        Step("download after remote edits", "download", "down"),
    ]

    def __init__(self, n_files: int = 5000, n_dirs: int = 50, size: int = 4096, n_edit: int = 50, n_new: int = 50):
        self.shape = (n_files, n_dirs, size)
        self.n_edit, self.n_new = n_edit, n_new
        self.label = f"{n_files:,} × {_size(size)} in {n_dirs} dirs"

    def prepare(self, ctx: Context) -> None:
        tag = "small-{}-{}-{}".format(*self.shape)
        files = small_files(*self.shape)
        self.edits = edits({rel: len(data) for rel, data in files.items()}, self.n_edit, self.n_new)
        self.originals = {rel: files[rel] for rel in self.edits if rel in files}
        self.t0 = cached_tree(ctx.data / tag / "t0", lambda p: write_tree(p, files))
        self.t1 = cached_tree(ctx.data / tag / "t1", lambda p: write_tree(p, {**files, **self.edits}))
        self.src = ctx.backend.remote(ctx.bucket, "small/src")
        ctx.backend.seed(self.t0.root, self.src)
        self.src_edited = False

    def before(self, step: Step, rep: int, ctx: Context) -> None:
        if step.name == "upload after edits":
            time.sleep(1.1)  # edits come after the upload, also at one-second mtime resolution
        elif step.name == "download to an empty dir" and self.src_edited:
            for rel, data in self.originals.items():
                ctx.backend.put(self.src, rel, data)
            ctx.backend.delete(self.src, [rel for rel in self.edits if rel not in self.originals])
            self.src_edited = False
        elif step.name == "download after remote edits":
            time.sleep(1.1)  # remote edits are newer than every tool's local copy, at one-second resolution
            for rel, data in self.edits.items():
                ctx.backend.put(self.src, rel, data)
            self.src_edited = True

    def setup(self, step: Step, slot: Slot, ctx: Context) -> None:
        if step.name == "upload to an empty prefix":
            slot.local = slot.work / "up"
            copy_tree(self.t0.root, slot.local)
            slot.remote = ctx.backend.remote(ctx.bucket, f"small/up/{slot.tool.name}/{slot.rep}")
        elif step.name == "upload after edits":
            assert slot.local is not None
            write_tree(slot.local, self.edits)
        elif step.name == "download to an empty dir":
            slot.local = slot.work / "down"
            slot.local.mkdir(parents=True)
            slot.remote, slot.verified = self.src, None

    def verify(self, step: Step, slot: Slot, ctx: Context) -> list[str]:
        assert slot.local is not None and slot.remote is not None
        if step.op == "upload":
            return verify_remote(ctx.backend, slot.remote, self.t1 if step.name == "upload after edits" else self.t0)
        golden = self.t1 if step.name == "download after remote edits" else self.t0
        problems, slot.verified = verify_local(slot.local, golden, slot.verified)
        return problems


class LargeFile(Workload):
    """One large random file (in a directory of its own): upload to an empty prefix, download to an empty dir."""

    name = "large"
    steps = [Step("upload", "upload", "up"), Step("download", "download", "down")]

    def __init__(self, mib: int = 512):
        self.mib = mib
        self.label = f"one {_size(mib << 20)} file"

    def prepare(self, ctx: Context) -> None:
        self.golden = large_tree(ctx.data, self.mib)
        self.src = ctx.backend.remote(ctx.bucket, "large/src")
        ctx.backend.seed(self.golden.root, self.src)

    def setup(self, step: Step, slot: Slot, ctx: Context) -> None:
        if step.op == "upload":  # tools only read the golden tree here
            slot.local = self.golden.root
            slot.remote = ctx.backend.remote(ctx.bucket, f"large/up/{slot.tool.name}/{slot.rep}")
        else:
            slot.local, slot.remote = slot.work / "down", self.src
            slot.local.mkdir(parents=True)

    def verify(self, step: Step, slot: Slot, ctx: Context) -> list[str]:
        assert slot.local is not None and slot.remote is not None
        if step.op == "upload":
            return verify_remote(ctx.backend, slot.remote, self.golden)
        return verify_local(slot.local, self.golden)[0]

    def cleanup(self, step: Step, slot: Slot, ctx: Context) -> None:
        if step.op == "upload" and slot.remote is not None:
            ctx.backend.delete_prefix(slot.remote)
        elif slot.local is not None:
            shutil.rmtree(slot.local, ignore_errors=True)


def large_tree(data: Path, mib: int) -> Tree:
    """The golden tree of `LargeFile`: one random file of ``mib`` MiB, ``large.bin`` (built once under ``data``)."""

    def build(path: Path) -> None:
        rng = random.Random(3)
        with open(path / "large.bin", "wb") as f:
            for _ in range(mib):
                f.write(random_bytes(rng, 1 << 20))

    return cached_tree(data / f"large-{mib}" / "t0", build)


class CrossSync(Workload):
    """Store to store: a golden tree seeded in ``backend.src`` is synced into an empty prefix of
    ``backend.dst`` (a `backends.CrossBackend`), then synced again (no-op); ``dst`` is verified each time.

    ``kind`` is ``small`` (the `SmallFiles` tree T0, shape ``small``) or ``large`` (the `LargeFile` file).
    Each tool and repetition syncs into a bucket of its own; a verified 512 MiB copy is deleted after its
    no-op step (fake-gcs-server keeps objects in memory).
    """

    name = "cross"
    steps = [Step("sync to an empty prefix", "sync", "sync"), Step("no-op sync", "sync", "sync")]

    def __init__(self, kind: str, small: tuple[int, int, int] = (5000, 50, 4096), mib: int = 512):
        self.kind, self.small, self.mib = kind, small, mib
        self.name = f"cross-{kind}"  # its logs and work directories (``--workloads cross`` selects both)
        n, dirs, size = small
        what = f"{n:,} × {_size(size)} in {dirs} dirs" if kind == "small" else f"one {_size(mib << 20)} file"
        self.label = f"S3 → GCS: {what}"

    def prepare(self, ctx: Context) -> None:
        if self.kind == "small":
            files = small_files(*self.small)
            tag = "small-{}-{}-{}".format(*self.small)  # the same golden T0 as `SmallFiles`
            self.golden = cached_tree(ctx.data / tag / "t0", lambda p: write_tree(p, files))
        else:
            self.golden = large_tree(ctx.data, self.mib)
        src = _cross(ctx).src
        self.src = src.remote(ctx.bucket, f"cross/{self.kind}/src")
        src.seed(self.golden.root, self.src)

    def setup(self, step: Step, slot: Slot, ctx: Context) -> None:
        if step.name == "sync to an empty prefix":  # a fresh bucket: fake-gcs-server slows down as one fills
            dst, bucket = _cross(ctx).dst, f"{ctx.bucket}-{self.kind}-{slot.tool.name}-{slot.rep}"
            dst.create_bucket(bucket)
            slot.source, slot.remote = self.src, dst.remote(bucket, f"cross/{self.kind}")

    def verify(self, step: Step, slot: Slot, ctx: Context) -> list[str]:
        assert slot.remote is not None
        return verify_remote(_cross(ctx).dst, slot.remote, self.golden)

    def cleanup(self, step: Step, slot: Slot, ctx: Context) -> None:
        if step.name == "no-op sync" and self.kind == "large" and slot.remote is not None:
            _cross(ctx).dst.delete_prefix(slot.remote)


def _cross(ctx: Context) -> CrossBackend:
    if not isinstance(ctx.backend, CrossBackend):
        raise TypeError(f"the cross workload needs a store-to-store backend (s3-gcs), not {ctx.backend.name}")
    return ctx.backend


class LargeListing(Workload):
    """A large listing: a no-op download of ``n`` tiny objects into a matching directory.

    The matching directory is a copy of the golden tree whose mtimes equal the
    objects' Last-Modified: exactly what rclone, s5cmd and aws leave after
    their own download (pos3 0.4.0 compares sizes only). A tool that keeps
    state (pos3) first runs one untimed download into it, which finds every
    file equal and records that in its own cache; then every tool runs the
    timed no-op, once per repetition. The tools take turns on one directory
    (100,000 files are slow to copy here): each leaves it as it found it, or
    the harness puts the pristine copy back before the next tool.
    """

    name = "listing"
    shared_slots = True
    steps = [
        Step("make the matching dir its own", "download", "noop", timed=False, once=True, stateful_only=True),
        Step("no-op download", "download", "noop"),
    ]

    def __init__(self, n: int = 100_000, per_dir: int = 1000):
        self.n, self.per_dir = n, per_dir
        self.label = f"{n:,} tiny objects"

    def prepare(self, ctx: Context) -> None:
        def build(path: Path) -> None:
            for d in range((self.n + self.per_dir - 1) // self.per_dir):
                (path / f"d{d:04d}").mkdir()
            for i in range(self.n):
                (path / f"d{i // self.per_dir:04d}" / f"f{i:07d}").write_bytes(b"%d\n" % i)

        self.golden = cached_tree(ctx.data / f"listing-{self.n}" / "t0", build)
        self.src = ctx.backend.remote(ctx.bucket, "listing/src")
        ctx.backend.seed(self.golden.root, self.src)
        self.mtimes = {obj.rel: obj.mtime for obj in ctx.backend.list(self.src)}
        self.matching = ctx.work / "listing-matching"
        self._restore()

    def _restore(self) -> None:
        """(Re)create the matching directory: the golden bytes, with the remote Last-Modified as mtimes."""
        shutil.rmtree(self.matching, ignore_errors=True)
        copy_tree(self.golden.root, self.matching)
        for rel, mtime in self.mtimes.items():
            os.utime(self.matching / rel, (mtime, mtime))
        self.pristine = Verified(snapshot(self.matching), self.golden)  # a copy of the golden tree: correct

    def setup(self, step: Step, slot: Slot, ctx: Context) -> None:
        slot.local, slot.remote, slot.verified = self.matching, self.src, self.pristine

    def verify(self, step: Step, slot: Slot, ctx: Context) -> list[str]:
        problems, after = verify_local(self.matching, self.golden, self.pristine)
        if after.snapshot != self.pristine.snapshot:
            self._restore()  # the next tool finds the same directory
        return problems


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"
