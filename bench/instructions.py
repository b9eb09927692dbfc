#!/usr/bin/env python3
"""Worker instructions per job (callgrind): machine load does not move them, so two trees
or two middleware sets can be compared to a few percent on a noisy machine.

An in-process burst worker (100 greenlets) drains N jobs of ``bench.rt_tasks.pb_noop``
(set_progress once, then an INCR, as peerbench's runtime-obs job does) under
``valgrind --tool=callgrind``; the figure is (instructions at N=3,000 - at N=1,000) /
2,000, so start-up cancels out. Spans and metrics go to OTLP_URL (bench/otlp_sink.py).
Under valgrind the worker runs ~50x slower, so time-driven work would run 50x more often
per job: the span export waits 25 s instead of 0.5 s and metrics export every 600 s.

    python bench/otlp_sink.py > /tmp/otlp.url &
    python bench/instructions.py --redis redis://127.0.0.1:6399/0 --otlp $(cat /tmp/otlp.url) [--middleware ""]
    python bench/instructions.py ... --tree /path/to/another/worktree     # the same for another tree
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = """
from gevent import monkey; monkey.patch_all()
import os, sys
sys.path[:0] = [os.environ["TREE"], os.environ["BENCH"]]
import diagnostics.otlp as otlp
from runtime.settings import load_settings
from runtime.worker.worker import Worker
d = list(otlp.NativeExportProcessor.__init__.__defaults__)
d[1] = 25.0  # seconds between span exports (0.5 natively)
otlp.NativeExportProcessor.__init__.__defaults__ = tuple(d)
over = {"redis_url": os.environ["URL"], "key_prefix": os.environ["PREFIX"], "queues": "bench",
        "task_modules": "rt_tasks", "greenlets": 100, "otlp_endpoint": os.environ["OTLP"]}
if os.environ.get("MW") is not None:
    over["middleware"] = os.environ["MW"]
Worker.from_settings(load_settings(over, env={})).run(burst=True)
"""


def run(n: int, args: argparse.Namespace) -> int:
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    from runtime.client import Client
    from runtime.settings import load_settings
    prefix = f"instr{os.getpid()}"
    c = Client(load_settings({"redis_url": args.redis, "key_prefix": prefix, "middleware": ""}, env={}))
    c.queue_jobs("rt_tasks.pb_noop", [{}] * n, queue="bench")
    env = dict(os.environ, TREE=str(args.tree), BENCH=str(REPO / "bench"), URL=args.redis, PREFIX=prefix,
               OTLP=args.otlp, OTEL_METRIC_EXPORT_INTERVAL="600000", BENCH_REDIS_URL=args.redis)
    if args.middleware is not None:
        env["MW"] = args.middleware
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                          WORKER], env=env, capture_output=True, text=True, check=True).stderr
    keys = list(c.redis.scan_iter(match=f"{prefix}:*", count=5000))
    for i in range(0, len(keys), 1000):
        c.redis.delete(*keys[i:i + 1000])
    return int(re.findall(r"Collected : (\d+)", out)[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", required=True, help="a Redis URL the bench may write keys to (its own prefix)")
    ap.add_argument("--otlp", required=True, help="OTLP/HTTP endpoint (bench/otlp_sink.py)")
    ap.add_argument("--middleware", default=None, help="the worker's middleware (default: runtime's default)")
    ap.add_argument("--tree", type=Path, default=REPO, help="the source tree the worker runs")
    args = ap.parse_args()
    small, large = run(1000, args), run(3000, args)
    print(f"{(large - small) / 2000:,.0f} instructions per job ({args.tree}, middleware "
          f"{'default' if args.middleware is None else repr(args.middleware)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
