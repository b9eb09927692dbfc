#!/usr/bin/env python3
"""Issue 4 targets: recycling speed, the supervisor's memory, ``run_task`` overhead.

1. Soft limit -> replacement claiming: a supervised worker (``--mem-limit``) runs leaky
   jobs (1 MiB kept per job) from a queue that never runs dry; for each recycle, the time
   from the moment the worker found itself over the limit (the event's ``at``) to the
   first job started by its replacement (that job's ``started_at``, same host clock).
   Target: median over 10 recycles at most 2 s.
2. Supervisor RSS over 10,000 jobs (``--processes 2 --max-jobs 2000``, so it also restarts
   children meanwhile), sampled every 0.1 s. Target: at most 40 MB and flat (within 10 %).
3. ``run_task`` overhead with the default middleware: mean time per call of a no-op task
   minus a direct call. Target: under 1 ms.

Starts its own redis-server; prints the figures and writes bench/results/recycle.json.

    python bench/recycle.py
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from throughput import RedisServer  # noqa: E402

from runtime.broker.embedded import redis_server_binary  # noqa: E402
from runtime.client import Client  # noqa: E402
from runtime.process import host_pid  # noqa: E402
from runtime.settings import load_settings  # noqa: E402


def supervisor(url: str, prefix: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "runtime", "--redis", url, "--prefix", prefix, "worker",
                             "--log-level", "WARNING", *args], env=env, cwd=str(REPO),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def recycle_latency(url: str, tmp: Path, recycles: int = 10) -> dict:
    prefix = "bench-recycle"
    client = Client(load_settings({"redis_url": url, "key_prefix": prefix}, env={}))
    ids = client.queue_jobs("tasks_example.work.leaky", [{"kilobytes": 1024}] * 2000)
    proc = supervisor(url, prefix, tmp / "recycle.log", "--mem-limit", "100M", "--greenlets", "4")
    key = client.broker.keys.events
    deadline = time.monotonic() + 180
    while client.redis.llen(key) < recycles + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop(proc)
    events = sorted((json.loads(e) for e in client.redis.lrange(key, 0, -1)), key=lambda e: e["at"])
    jobs = [j for j in client.store.get_many(ids, history=False) if j and j.started_at and j.worker]
    first_start: dict[str, float] = {}
    for j in jobs:
        first_start[j.worker] = min(first_start.get(j.worker, j.started_at), j.started_at)
    gaps = []
    for e in events[:recycles]:
        later = [(t, w) for w, t in first_start.items() if t > e["at"] and host_pid(w)[1] != e["pid"]]
        if later:
            gaps.append(min(later)[0] - e["at"])
    return {"recycles": len(gaps), "median_s": statistics.median(gaps), "max_s": max(gaps),
            "gaps_s": [round(g, 3) for g in gaps],
            "rss_at_recycle_mib": [round(e["rss_bytes"] / 2**20, 1) for e in events[:recycles]]}


def supervisor_rss(url: str, tmp: Path, n: int = 10_000) -> dict:
    prefix = "bench-suprss"
    client = Client(load_settings({"redis_url": url, "key_prefix": prefix}, env={}))
    proc = supervisor(url, prefix, tmp / "suprss.log", "--processes", "2", "--max-jobs", "2000")
    ps = psutil.Process(proc.pid)
    time.sleep(1.0)
    samples = [ps.memory_info().rss]
    ids = client.queue_jobs("tasks_example.work.noop", [{}] * n)
    t0 = time.monotonic()
    while True:
        samples.append(ps.memory_info().rss)
        counts = client.store.counts()
        if counts.get("success", 0) >= n:
            break
        if time.monotonic() - t0 > 300:
            break
        time.sleep(0.1)
    done = client.store.counts().get("success", 0)
    restarts = int(client.redis.hget(client.broker.keys.worker(
        next(w for w in client.redis.smembers(client.broker.keys.workers) if ".s" in w)), "restarts") or 0)
    stop(proc)
    mib = [s / 2**20 for s in samples]
    return {"jobs": done, "of": len(ids), "samples": len(mib), "first_mib": round(mib[0], 2),
            "last_mib": round(mib[-1], 2), "min_mib": round(min(mib), 2), "max_mib": round(max(mib), 2),
            "spread_pct": round(100 * (max(mib) - min(mib)) / min(mib), 1), "child_restarts": restarts,
            "drain_s": round(time.monotonic() - t0, 1)}


def run_task_overhead(n: int = 3000) -> dict:
    from runtime import run_task
    from tasks_example.work import noop
    for _ in range(200):
        run_task("tasks_example.work.noop")
    t = time.perf_counter()
    for _ in range(n):
        run_task("tasks_example.work.noop")
    per_call = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n):
        noop()
    direct = (time.perf_counter() - t) / n
    return {"calls": n, "run_task_us": round(per_call * 1e6, 1), "direct_us": round(direct * 1e6, 2),
            "overhead_ms": round((per_call - direct) * 1000, 3)}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rt-bench-recycle-"))
    server = RedisServer(redis_server_binary(), tmp)
    server.start()
    try:
        out = {"run_task": run_task_overhead()}
        print("run_task overhead:", out["run_task"], flush=True)
        out["recycle"] = recycle_latency(server.url, tmp)
        print("soft limit -> replacement claiming:", out["recycle"], flush=True)
        out["supervisor_rss"] = supervisor_rss(server.url, tmp)
        print("supervisor RSS over 10,000 jobs:", out["supervisor_rss"], flush=True)
    finally:
        server.stop()
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "recycle.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
