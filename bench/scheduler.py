#!/usr/bin/env python3
"""The scheduler's targets, on a redis-server of its own and 5 worker processes:

    python bench/scheduler.py                    # lateness over 60 fires, idle cost 2 x 30 s
    python bench/scheduler.py --fires 20 --idle-s 10 --workers 3

lateness   N worker processes all run the scheduler of one schedule firing every second;
           per fire time: its job's started_at (Redis clock) - the fire time (from the
           job id); p50 / p99 / max in ms, and the count of jobs against fire times
           (exactly one each)
idle cost  Redis commands per second per worker (INFO commandstats, all commands) of N
           idle workers with an idle schedule (every hour) minus the same workers with
           none, alternated (A B A B) to spread the machine's noise
Target: lateness p99 < 1 s with 5 workers; idle cost < 1 command/s per worker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from throughput import RedisServer, pct  # noqa: E402

from runtime.broker.embedded import redis_server_binary  # noqa: E402
from runtime.broker.keys import Keys  # noqa: E402

MODULE = """
from runtime import periodic

@periodic(every={every}, name="bench")
def tick() -> None:
    pass
"""


def start_workers(n: int, url: str, prefix: str, folder: Path, module: str) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
    tasks = "tasks_example" + (f",{module}" if module else "")
    return [subprocess.Popen([sys.executable, "-m", "runtime", "--redis", url, "--prefix", prefix, "worker",
                              "--tasks", tasks, "--log-level", "WARNING"], cwd=folder, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def wait_workers(r: redis.Redis, prefix: str, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while r.scard(Keys(prefix).workers) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not register")
        time.sleep(0.1)


def lateness(url: str, folder: Path, n_workers: int, fires: int) -> None:
    (folder / "sched_late.py").write_text(textwrap.dedent(MODULE.format(every=1.0)))
    r = redis.Redis.from_url(url, decode_responses=True)
    prefix = "late"
    procs = start_workers(n_workers, url, prefix, folder, "sched_late")
    try:
        wait_workers(r, prefix, n_workers)
        time.sleep(3)  # let every scheduler sync once
        start = time.time()
        while time.time() < start + fires + 1:
            time.sleep(0.5)
    finally:
        stop(procs)
    ids = [i for i in r.zrange(Keys(prefix).status("default", "success"), 0, -1) if i.startswith("default:bench@")]
    late = []
    for i in ids:
        fire = datetime.fromisoformat(i.split("@")[1].replace("Z", "+00:00")).timestamp()
        started = float(r.hget(Keys(prefix).job(i), "started_at") or 0)
        if fire >= start:
            late.append((started - fire) * 1000)
    late.sort()
    times = sorted(datetime.fromisoformat(i.split("@")[1].replace("Z", "+00:00")).timestamp() for i in ids)
    gaps = sum(1 for a, b in zip(times, times[1:]) if round(b - a) != 1)
    print(f"lateness, {n_workers} workers running the scheduler, every 1 s: {len(late)} fires measured, "
          f"{len(ids)} jobs, {len(set(ids))} distinct, {gaps} gaps")
    print(f"  fire -> start  p50 {pct(late, 50):.1f} ms   p99 {pct(late, 99):.1f} ms   max {late[-1]:.1f} ms")


def commands(r: redis.Redis) -> int:
    return sum(int(v["calls"]) for k, v in r.info("commandstats").items())


def scheduler_commands(url: str, folder: Path, n_workers: int, window_s: float) -> float:
    """Commands/s per worker that name the scheduler's keys or scripts, counted with
    MONITOR over ``window_s`` with N idle workers and one idle schedule."""
    r = redis.Redis.from_url(url, decode_responses=True)
    prefix = "idlemon"
    procs = start_workers(n_workers, url, prefix, folder, "sched_idle")
    fire_sha = r.script_load(__import__("runtime.broker.scripts", fromlist=["source"]).source("fire"))
    n = 0
    try:
        wait_workers(r, prefix, n_workers)
        time.sleep(3)
        with r.monitor() as m:
            end = time.monotonic() + window_s
            for cmd in m.listen():
                if time.monotonic() > end:
                    break
                text = cmd.get("command", "")
                if cmd.get("client_type") == "lua":
                    continue
                k = Keys(prefix)
                if (f"{prefix}:sc:" in text or k.schedulers in text or text == "TIME"
                        or fire_sha in text):
                    n += 1
    finally:
        stop(procs)
    return n / window_s / n_workers


def idle_cost(url: str, folder: Path, n_workers: int, window_s: float) -> None:
    (folder / "sched_idle.py").write_text(textwrap.dedent(MODULE.format(every=3600.0)))
    r = redis.Redis.from_url(url, decode_responses=True)
    rates: dict[str, list[float]] = {"without": [], "with": []}
    for round_ in range(2):
        for kind in ("without", "with"):
            prefix = f"idle{round_}{kind}"
            procs = start_workers(n_workers, url, prefix, folder, "sched_idle" if kind == "with" else "")
            try:
                wait_workers(r, prefix, n_workers)
                time.sleep(3)
                c0, t0 = commands(r), time.monotonic()
                time.sleep(window_s)
                c1, t1 = commands(r), time.monotonic()
            finally:
                stop(procs)
            rates[kind].append((c1 - c0 - 2) / (t1 - t0) / n_workers)  # -2: our own INFO calls
    own = scheduler_commands(url, folder, n_workers, window_s)
    print(f"idle cost, MONITOR: the schedulers' own commands (TIME outside scripts, HMGET of the schedule, "
          f"ZADD/ZREM of the schedulers zset, fire.lua): {own:.2f} commands/s per worker")
    w, wo = sum(rates["with"]) / 2, sum(rates["without"]) / 2
    print(f"idle cost, {n_workers} idle workers, {window_s:.0f} s windows, A/B twice: "
          f"{wo:.2f} commands/s per worker without a schedule, {w:.2f} with one idle schedule "
          f"-> scheduler {w - wo:.2f} commands/s per worker (runs: {rates})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--fires", type=int, default=60)
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rt-bench-sched-"))
    server = RedisServer(redis_server_binary(), folder)
    server.start()
    try:
        lateness(server.url, folder, args.workers, args.fires)
        idle_cost(server.url, folder, args.workers, args.idle_s)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
