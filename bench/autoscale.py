#!/usr/bin/env python3
"""Autoscaling curve: a burst of jobs on a ``--processes MIN:MAX`` supervisor.

    python bench/autoscale.py                        # 2,000 jobs of 100 ms, 1:4, target 2 s, warm-up 3 s
    python bench/autoscale.py --jobs 500 --max 3

Starts a redis-server of its own and ``runtime worker --processes 1:MAX --greenlets G``,
queues the burst at once, and samples every 0.5 s: the queue latency (age of the next job,
runtime.supervisor.autoscale.queue_latency), the worker processes running and the jobs
left; then waits for the scale-down to MIN. Prints the curve, the largest latency against
target + warm-up, and the scale events (``runtime events``). Stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from throughput import RedisServer  # noqa: E402

from runtime.broker.embedded import redis_server_binary  # noqa: E402
from runtime.client import Client  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from runtime.supervisor.autoscale import queue_latency  # noqa: E402


def processes(r: redis.Redis, keys) -> int:
    for w in r.smembers(keys.workers):
        e = r.hgetall(keys.worker(w))
        if e.get("kind") == "supervisor":
            return len([c for c in json.loads(e["children"]) if not c["recycling"]])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--job-s", type=float, default=0.1)
    ap.add_argument("--max", type=int, default=4)
    ap.add_argument("--greenlets", type=int, default=10)
    ap.add_argument("--target", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--cooldown", type=float, default=5.0)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rt-bench-scale-"))
    server = RedisServer(redis_server_binary(), folder)
    server.start()
    prefix = "scale"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = str(REPO)
    sup = subprocess.Popen([sys.executable, "-m", "runtime", "--redis", server.url, "--prefix", prefix, "worker",
                            "--processes", f"1:{args.max}", "--greenlets", str(args.greenlets), "--tasks",
                            "tasks_example", "--autoscale-target", str(args.target), "--autoscale-warmup",
                            str(args.warmup), "--autoscale-cooldown", str(args.cooldown), "--log-level", "WARNING"],
                           env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        c = Client(load_settings({"redis_url": server.url, "key_prefix": prefix, "task_modules": "tasks_example"},
                                 env={}))
        keys, r = c.broker.keys, c.redis
        while processes(r, keys) < 1:
            time.sleep(0.2)
        time.sleep(2)
        t0 = time.time()
        c.queue_jobs("tasks_example.work.io_wait", [{"seconds": args.job_s}] * args.jobs)
        curve = []
        top = 0.0
        while True:
            t = time.time() - t0
            lat = queue_latency(r, keys, ["default"])["default"]
            left = r.zcard(keys.ready("default"))
            n = processes(r, keys)
            top = max(top, lat)
            curve.append((t, lat, n, left))
            if left == 0 and n == 1 and t > 5:
                break
            if t > 600:
                break
            time.sleep(0.5)
        events = [e for e in (json.loads(x) for x in r.lrange(keys.events, 0, -1)) if e["event"] == "scale"]
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(60)
        except subprocess.TimeoutExpired:
            sup.kill()
        server.stop()
    print(f"burst of {args.jobs} jobs of {args.job_s * 1000:.0f} ms, --processes 1:{args.max} --greenlets "
          f"{args.greenlets}, target {args.target:g} s, warm-up {args.warmup:g} s, cool-down {args.cooldown:g} s")
    print(f"{'t (s)':>6} {'latency (s)':>12} {'processes':>10} {'ready':>7}")
    last = None
    for t, lat, n, left in curve:
        if (n, left > 0) != last or int(t * 2) % 4 == 0:
            print(f"{t:6.1f} {lat:12.2f} {n:>10} {left:>7}")
        last = (n, left > 0)
    print(f"largest latency {top:.2f} s against target + warm-up {args.target + args.warmup:g} s: "
          f"{'under' if top < args.target + args.warmup else 'OVER'}")
    for e in reversed(events):
        print(f"  event scale ({e['reason']}): {e['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
