#!/usr/bin/env python3
"""Cost of capturing a job's print output: a tqdm-style progress bar redrawn 20,000 times
(``\\r``, no newline) run by run_task with the Logs middleware (captured), against the
same function called outside any job (uncaptured). Both write to /dev/null. Issue 15's
target: captured within 2x of uncaptured.

    python bench/print_capture.py [--writes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from rt_tasks import progress_bar  # noqa: E402

from runtime.local import run_task  # noqa: E402
from runtime.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    settings = Settings(task_modules=("rt_tasks",), middleware=("diagnostics.logs.Logs",))
    real = sys.stdout
    with open("/dev/null", "w") as devnull:
        bare, captured = [], []
        for _ in range(args.repeat):
            sys.stdout = devnull
            t = time.perf_counter()
            progress_bar(args.writes)
            bare.append(time.perf_counter() - t)
            sys.stdout = devnull  # the Logs middleware wraps whatever stdout is
            t = time.perf_counter()
            run = run_task("rt_tasks.progress_bar", {"n": args.writes}, settings)
            captured.append(time.perf_counter() - t)
            assert run.status == "success", run
        sys.stdout = real
    b, c = statistics.median(bare), statistics.median(captured)
    print(f"{args.writes:,} \\r writes, median of {args.repeat}: uncaptured {b * 1000:.1f} ms, "
          f"captured {c * 1000:.1f} ms ({c / b:.2f}x); captured log: {run.logs[-1][:60]!r}")


if __name__ == "__main__":
    main()
