"""Hostile-input corpus totals (#18): run every test marked ``hostile`` and count by class.

Each case of the corpus is one pytest test (or parametrized id) marked
``@pytest.mark.hostile(cls=..., expect="clear_error" | "correct")``: a ``clear_error`` case passes
when the input is refused with a :class:`~splatforge_core.errors.SplatForgeError` (or, for
commands, a non-zero exit with a one-line message and no traceback) that names the file; a
``correct`` case passes when the run goes on and its result is right. A failing case is a
regression into one of the classes the issue found (silent wrong output, raw traceback, error
naming no file, leftover, file outside the project, hang), so the table's "failed" column must
read zero.

    python benchmarks/bench_reliability.py            # -> benchmarks/results/reliability.md
    python benchmarks/bench_reliability.py --fast     # leave out the cases marked slow
"""

from __future__ import annotations

import argparse
import collections
import platform
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "reliability.md"


class Collector:
    """pytest plugin: the ``hostile`` marker of every collected item and each item's outcome."""

    def __init__(self) -> None:
        self.marks: dict[str, dict] = {}
        self.doc: dict[str, str] = {}
        self.outcome: dict[str, str] = {}
        self.longrepr: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for it in items:
            m = it.get_closest_marker("hostile")
            if m is None:
                continue
            kw = dict(m.kwargs)
            if m.args:  # hostile("cls", "expect") is accepted too
                kw.setdefault("cls", m.args[0])
                if len(m.args) > 1:
                    kw.setdefault("expect", m.args[1])
            self.marks[it.nodeid] = kw
            fn = getattr(it, "function", None)
            para = (fn.__doc__ or "").strip().split("\n\n")[0] if fn else ""
            self.doc[it.nodeid] = " ".join(para.split())

    def pytest_runtest_logreport(self, report) -> None:
        nid = report.nodeid
        if nid not in self.marks:
            return
        if report.when == "call" or report.outcome in ("failed", "skipped"):
            prev = self.outcome.get(nid)
            if prev == "failed":
                return
            self.outcome[nid] = report.outcome
            if report.outcome == "failed":
                self.longrepr[nid] = str(report.longrepr).splitlines()[-1][:200] if report.longrepr else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="leave out the cases marked slow")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    marker = "hostile and not slow" if args.fast else "hostile"
    col = Collector()
    t0 = time.perf_counter()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-m", marker, str(REPO / "tests")], plugins=[col])
    wall = time.perf_counter() - t0

    by_cls: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for nid, kw in col.marks.items():
        out = col.outcome.get(nid, "not run")
        c = by_cls[kw.get("cls", "?")]
        c["cases"] += 1
        if out == "passed":
            c["clear_error" if kw.get("expect") == "clear_error" else "correct"] += 1
        else:
            c[out] += 1
    tot: collections.Counter = collections.Counter()
    for c in by_cls.values():
        tot.update(c)

    lines = [
        "# Hostile-input corpus (#18)",
        "",
        "Every case is a test marked `hostile(cls, expect)` in `tests/`, run on a broken copy of a real",
        "file. A case passes with a clear error (a `SplatForgeError`, or a non-zero exit with a one-line",
        "message and no traceback, naming the file) or with a correct result; \"failed\" counts silent",
        "wrong output, raw tracebacks, errors naming no file, leftovers, files written outside the",
        "project and hangs, and must be zero. \"skipped\" are cases whose precondition is missing on the",
        "machine (the test prints why).",
        "",
        f"Reproduce: `python benchmarks/bench_reliability.py{' --fast' if args.fast else ''}` "
        f"({platform.node() or 'host'}, {wall:.0f} s, pytest exit {int(rc)}).",
        "",
        "| class | cases | clear error | correct result | failed | skipped |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cls in sorted(by_cls):
        c = by_cls[cls]
        lines.append(f"| {cls} | {c['cases']} | {c['clear_error']} | {c['correct']} | {c['failed']} | "
                     f"{c['skipped'] + c['not run']} |")
    lines.append(f"| **all** | **{tot['cases']}** | **{tot['clear_error']}** | **{tot['correct']}** | "
                 f"**{tot['failed']}** | **{tot['skipped'] + tot['not run']}** |")
    lines += ["", "## Cases", "", "| class | expect | outcome | test |", "|---|---|---|---|"]
    for nid, kw in sorted(col.marks.items(), key=lambda kv: (kv[1].get("cls", ""), kv[0])):
        out = col.outcome.get(nid, "not run")
        desc = col.doc.get(nid, "")
        name = nid.split("::", 1)[-1]
        cell = f"`{name}`" + (f": {desc}" if desc else "")
        if out == "failed":
            cell += f" **({col.longrepr.get(nid, '')})**"
        lines.append(f"| {kw.get('cls', '?')} | {kw.get('expect', '?')} | {out} | {cell.replace('|', '/')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    start = lines.index("| class | cases | clear error | correct result | failed | skipped |")
    print("\n".join(lines[start:start + len(by_cls) + 3]))
    print(f"wrote {args.out}")
    return 0 if tot["failed"] == 0 and tot["cases"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
