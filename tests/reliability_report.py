"""The reliability table: every test marked ``reliability`` is one row of ``docs/reliability.md``.

Mark a test with the scenario it proves and the group it belongs to::

    @pytest.mark.reliability("Download survives connection resets ({backend})", group="Faults")
    def test_...(backend, reliability):
        for _ in range(n):
            ...
        reliability.runs(n)  # how many times the scenario ran (default 1)

``{name}`` fields are filled from the test's parameters. Rows with the same
group and scenario add up their runs; a row fails if any of its tests failed.
At the end of the session the table is printed, and when the whole suite ran
(no ``-k``/``-m``, no test files named) it is written to docs/reliability.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
_KEY = pytest.StashKey[dict]()


@dataclass
class _Row:
    runs: int = 0
    tests: int = 0
    failed: int = 0


class Recorder:
    """Handed to a test as the ``reliability`` fixture."""

    def __init__(self) -> None:
        self.count = 1

    def runs(self, n: int) -> None:
        """Record that the scenario ran ``n`` times in this test."""
        self.count = n


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability(scenario, group): a row of docs/reliability.md")
    config.stash[_KEY] = {}


@pytest.fixture
def reliability() -> Recorder:
    return Recorder()


def _scenario(item: pytest.Item) -> tuple[str, str] | None:
    mark = item.get_closest_marker("reliability")
    if mark is None:
        return None
    text = mark.args[0] if mark.args else item.name
    params = getattr(getattr(item, "callspec", None), "params", {})
    with contextlib.suppress(KeyError, IndexError):
        text = text.format(**params)
    return mark.kwargs.get("group", "Other"), text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    key = _scenario(item)
    if key is None or report.when != "call" and not report.failed:
        return
    if report.when != "call" and report.skipped:
        return
    rows: dict = item.config.stash[_KEY]
    row = rows.setdefault(key, _Row())
    if report.when == "call":
        recorder = item.funcargs.get("reliability") if hasattr(item, "funcargs") else None
        row.tests += 1
        row.runs += recorder.count if isinstance(recorder, Recorder) else 1
    if report.failed:
        row.failed += 1


def _table(rows: dict) -> list[str]:
    lines = ["| group | scenario | runs | result |", "| --- | --- | ---: | --- |"]
    for (group, scenario), row in sorted(rows.items()):
        result = "passed" if not row.failed else f"FAILED ({row.failed} of {max(row.tests, row.failed)} tests)"
        lines.append(f"| {group} | {scenario} | {row.runs} | {result} |")
    return lines


def _whole_suite(config: pytest.Config) -> bool:
    opts = config.option
    if opts.keyword or opts.markexpr or getattr(opts, "lf", False) or opts.maxfail:
        return False
    root = Path(str(config.rootpath))
    named = {(root / a).resolve() for a in config.args}
    return named <= {(root / p).resolve() for p in config.getini("testpaths") or ["."]} | {root}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows: dict = config.stash[_KEY]
    if not rows:
        return
    table = _table(rows)
    terminalreporter.write_sep("-", "reliability scenarios")
    for line in table:
        terminalreporter.write_line(line)
    if _whole_suite(config):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(
            "# Reliability scenarios\n\n"
            "Written by the test suite (`tests/reliability_report.py`) at the end of every full run of\n"
            "`scripts/test`: each row is a scenario the suite ran against real servers, how many times it\n"
            "ran, and its result. `POS3_SOAK=N` multiplies the repetitions of the randomised scenarios.\n\n"
            + "\n".join(table)
            + "\n"
        )
        terminalreporter.write_line(f"(written to {DOC})")
