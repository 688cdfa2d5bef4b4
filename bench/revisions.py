"""One benchmark on two revisions of this repository, side by side, in one run.

    .venv/bin/python -m bench.revisions --before 90ac7b9 -- latency --n 10000
    .venv/bin/python -m bench.revisions --before main~3 --rounds 2 -- locomo_recall

``--before`` (and ``--after``, default: the working tree as it is) are checked out into
temporary git worktrees; the benchmark module runs in each, with that revision's code first on
``PYTHONPATH`` (the servers it starts run that code too) and the same virtual environment, one
after the other, in ABBA order over ``--rounds`` so a machine that drifts weighs on both
alike. Prints one JSON report: every run's own report, and for each number both reports hold
(recall, latency percentiles, throughput) the value per revision and after/before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.managed_server import emit_report, machine_info

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("recall", "p50", "p95", "p99", "qps", "_ms", "per_s")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: python -m bench.revisions --before REV [--after REV] "
                         "[--rounds N] -- BENCHMARK [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="bench.revisions")
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", default=None,
                        help="a git revision (default: the working tree as it is)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv[:split])
    bench = argv[split + 1:]
    if not bench:
        raise SystemExit("name a benchmark after --, e.g. -- latency --n 10000")
    return args, bench


def checkout(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(into),
                    revision], check=True, capture_output=True)
    return into


def run(tree: Path, bench: list[str], out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", f"bench.{bench[0]}", *bench[1:], "--out", str(out)]
    print(f"[revisions] {tree}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def numbers(report: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in the report, by its dotted path (lists by position)."""
    if isinstance(report, dict):
        for key, value in report.items():
            yield from numbers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(report, list):
        for position, value in enumerate(report):
            yield from numbers(value, f"{path}[{position}]")
    elif isinstance(report, (int, float)) and not isinstance(report, bool):
        yield path, float(report)


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Per number both sides report: the median over rounds of each, and after/before."""
    def medians(reports: list[dict[str, Any]]) -> dict[str, float]:
        found: dict[str, list[float]] = {}
        for report in reports:
            for path, value in numbers(report):
                if any(mark in path.rsplit(".", 1)[-1] for mark in COMPARED) or \
                        "recall" in path:
                    found.setdefault(path, []).append(value)
        return {path: statistics.median(values) for path, values in found.items()}

    a, b = medians(before), medians(after)
    return {path: {"before": a[path], "after": b[path],
                   "after_over_before": round(b[path] / a[path], 3) if a[path] else None}
            for path in sorted(a.keys() & b.keys())}


def main(argv: list[str] | None = None) -> int:
    args, bench = parse_args(list(sys.argv[1:] if argv is None else argv))
    root = Path(tempfile.mkdtemp(prefix="anamnesis-revisions-"))
    worktrees: list[Path] = []
    try:
        before_tree = checkout(args.before, root / "before")
        worktrees.append(before_tree)
        after_tree = REPO_ROOT
        if args.after is not None:
            after_tree = checkout(args.after, root / "after")
            worktrees.append(after_tree)
        reports: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            order = [("before", before_tree), ("after", after_tree)]
            for side, tree in order if round_ % 2 == 0 else order[::-1]:
                reports[side].append(run(tree, bench, root / f"{side}-{round_}.json"))
        summary = {
            "benchmark": "revisions",
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "config": {"before": args.before, "after": args.after or "working tree",
                       "rounds": args.rounds, "command": bench},
            "compared": compare(reports["before"], reports["after"]),
            "reports": reports,
        }
    finally:
        for tree in worktrees:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    emit_report(summary, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
