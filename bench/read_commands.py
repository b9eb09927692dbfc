"""Wall time of the read-only CLI commands with 10,000 jobs stored (issue 16's target:
each under 300 ms on the embedded server).

Makes a project in a temporary folder, queues JOBS noop jobs on its embedded Redis, runs
them with a ``--burst`` worker, then times each command as a user runs it: the
``runtime`` script installed beside this Python, in a process of its own, RUNS times;
prints the median and the fastest, in ms. Stops the server at the end.

    python bench/read_commands.py [--jobs 10000] [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["jobs"], ["job", "{id}"], ["queues"], ["workers"], ["events"], ["info"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    runtime = str(Path(sys.executable).with_name("runtime"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    home = Path(tempfile.mkdtemp(prefix="rt-read-"))

    def run(*argv: str) -> str:
        return subprocess.run([runtime, *argv], cwd=home, env=env, capture_output=True, text=True,
                              check=True).stdout

    try:
        subprocess.run([sys.executable, "-c", f"from runtime import Client; "
                        f"Client().queue_jobs('tasks_example.work.noop', [{{}}] * {args.jobs})"],
                       cwd=home, env=env, check=True, capture_output=True)
        subprocess.run([runtime, "worker", "--burst", "--greenlets", "50", "--log-level", "WARNING"],
                       cwd=home, env=env, check=True)
        job_id = json.loads(run("jobs", "-n", "1", "--json"))["jobs"][0]["id"]
        stored = sum(json.loads(run("queues", "--json"))["counts"].values())
        print(f"{stored:,} jobs stored; {args.runs} runs of each command ({runtime})")
        print(f"{'command':10} {'median ms':>10} {'min ms':>8}")
        for argv in COMMANDS:
            argv = [a.format(id=job_id) for a in argv]
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                run(*argv)
                times.append(time.perf_counter() - t)
            print(f"{argv[0]:10} {statistics.median(times) * 1000:10.0f} {min(times) * 1000:8.0f}")
    finally:
        subprocess.run([runtime, "embedded", "stop", "--force"], cwd=home, env=env, capture_output=True)


if __name__ == "__main__":
    main()
