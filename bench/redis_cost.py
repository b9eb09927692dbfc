#!/usr/bin/env python3
"""What one job costs Redis: CPU, commands, keys and bytes, per phase and per command.

    python bench/redis_cost.py                  # N=20,000, own redis-server on a free port
    python bench/redis_cost.py --n 5000 --reps 3
    python bench/redis_cost.py --keep none      # the jobs' task keeps no document (@task(keep=...))
    python bench/redis_cost.py --callgrind --n 2000   # + Redis instructions per job (valgrind)

Phases, each on a fresh key prefix after ``CONFIG RESETSTAT``:
  enqueue   N no-op jobs, one ``Client.queue_job`` each (enqueue.lua)
  bulk      N no-op jobs, ``Client.queue_jobs`` in batches of 1,000
  drain     the N jobs of ``enqueue`` run by one worker process (``--greenlets 100
            --burst``), from spawn to exit (claim.lua, finish.lua, start records,
            registration, heartbeats)

Per phase: the server's CPU (user + sys, ``INFO cpu``) per job, in microseconds, which
includes reading requests and writing replies; ``EVALSHA`` time per job from ``INFO
commandstats`` (a script's time includes the commands it calls, which commandstats also
counts under their own names); each command's calls and microseconds per job. After the
drain: keys and ``used_memory`` bytes kept per successful job (delta against the empty
prefix). Prints markdown; stops the redis-server it started by pid.

``--callgrind`` runs the redis-server under valgrind's callgrind and adds the server's
instructions per job of each phase (zeroed and dumped with callgrind_control around it):
machine load does not move them, so two trees compare to a few percent on a busy
machine, where CPU and commandstats times do not (they include time spent descheduled).
The count includes the server's cron (10 a second) while a phase runs ~30x slower.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from throughput import RedisServer  # noqa: E402

from runtime.client import Client  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

NOOP = {"full": "tasks_example.work.noop", "compact": "bench.rt_tasks.noop_keep_compact",
        "none": "bench.rt_tasks.noop_keep_none"}


class Callgrind:
    """The instructions the redis-server under callgrind executes between :meth:`zero`
    and :meth:`count` (callgrind_control, by pid)."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder, self.dumps = pid, folder, 0

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.pid)], check=True, capture_output=True)

    def count(self) -> int:
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True)
        self.dumps += 1
        text = (self.folder / f"cg.{self.pid}.{self.dumps}").read_text()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("summary:")))


class CallgrindServer(RedisServer):
    """A throw-away redis-server under ``valgrind --tool=callgrind``."""

    def start(self, timeout_s: float = 60.0) -> None:
        self.binary_argv = ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
                            f"--callgrind-out-file={self.log.parent}/cg.%p",
                            self.binary]
        argv = [*self.binary_argv, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.log.parent)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.2)
        raise RuntimeError("redis-server under callgrind did not answer")


CG: Callgrind | None = None


def cpu_s(r: redis.Redis) -> float:
    c = r.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def phase(r: redis.Redis, n: int, run: Any) -> dict[str, Any]:
    """Run ``run()`` between two readings: CPU µs/job, wall s, per-command calls and µs/job."""
    r.config_resetstat()
    if CG:
        CG.zero()
    c0, t0 = cpu_s(r), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - t0, cpu_s(r) - c0
    out: dict[str, Any] = {"cpu_us": cpu / n * 1e6, "rate": n / wall}
    if CG:
        out["instructions"] = CG.count() / n
    out["commands"] = {k.removeprefix("cmdstat_"): (v["calls"] / n, v["usec"] / n)
                       for k, v in r.info("commandstats").items() if k not in ("cmdstat_info", "cmdstat_config")}
    return out


def one_run(r: redis.Redis, url: str, n: int, keep: str, tag: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    prefix = f"cost-{tag}"
    c = Client(load_settings({"redis_url": url, "key_prefix": prefix}, env={}))
    path = NOOP[keep]
    c.queue_job(path, {}, queue="warm")  # loads the script
    r.delete(*r.keys(f"{prefix}:*"))
    used0, keys0 = r.info("memory")["used_memory"], r.dbsize()
    out["enqueue"] = phase(r, n, lambda: [c.queue_job(path, {}, queue="cost") for _ in range(n)])
    out["enqueue"]["bytes"] = (r.info("memory")["used_memory"] - used0) / n
    argv = [sys.executable, "-m", "runtime", "--redis", url, "--prefix", prefix, "worker",
            "--queues", "cost", "--tasks", "tasks_example,bench.rt_tasks", "--greenlets", "100", "--burst"]
    out["drain"] = phase(r, n, lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.DEVNULL, cwd=HERE.parent))
    out["drain"]["bytes"] = (r.info("memory")["used_memory"] - used0) / n
    out["drain"]["keys"] = (r.dbsize() - keys0) / n
    bulk = Client(load_settings({"redis_url": url, "key_prefix": prefix + "-bulk"}, env={}))
    out["bulk"] = phase(r, n, lambda: bulk.queue_jobs(path, [{}] * n, queue="cost", batch_size=1000))
    for p in (prefix, prefix + "-bulk"):
        for key in r.scan_iter(f"{p}:*", count=1000):
            r.delete(key)
    return out


def report(runs: list[dict[str, dict[str, Any]]]) -> str:
    lines = ["| phase | Redis CPU µs/job | jobs/s | EVALSHA µs/job | bytes/job | keys/job | instructions/job |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for ph in ("enqueue", "bulk", "drain"):
        rows = [run[ph] for run in runs]

        def med(f: Any, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(f(x) for x in rows)
        evalsha = med(lambda x: x["commands"].get("evalsha", (0, 0))[1])
        bytes_ = f"{med(lambda x: x['bytes']):,.0f}" if "bytes" in rows[0] else ""
        keys = f"{med(lambda x: x['keys']):.2f}" if "keys" in rows[0] else ""
        ins = f"{med(lambda x: x['instructions']):,.0f}" if "instructions" in rows[0] else ""
        lines.append(f"| {ph} | {med(lambda x: x['cpu_us']):.1f} | {med(lambda x: x['rate']):,.0f} | "
                     f"{evalsha:.1f} | {bytes_} | {keys} | {ins} |")
    both = [r["enqueue"].get("instructions", 0) + r["drain"].get("instructions", 0) for r in runs]
    lines.append(f"| enqueue + drain | {statistics.median(r['enqueue']['cpu_us'] + r['drain']['cpu_us'] for r in runs):.1f}"
                 f" | | | | | {statistics.median(both):,.0f} |")
    for ph in ("enqueue", "drain"):
        lines += ["", f"{ph}: commands per job (median of runs; inside scripts too)", "",
                  "| command | calls/job | µs/job |", "|---|---:|---:|"]
        names = sorted(runs[0][ph]["commands"], key=lambda k: -runs[0][ph]["commands"][k][1])
        for name in names:
            calls = statistics.median(r[ph]["commands"].get(name, (0, 0))[0] for r in runs)
            us = statistics.median(r[ph]["commands"].get(name, (0, 0))[1] for r in runs)
            if calls >= 0.005:
                lines.append(f"| {name} | {calls:.2f} | {us:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--keep", choices=sorted(NOOP), default="full", help="what the task keeps after success")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--callgrind", action="store_true", help="count the server's instructions (valgrind)")
    ap.add_argument("--profiles", type=Path, help="with --callgrind: copy each phase's callgrind dump "
                    "(cg.PID.1 enqueue, .2 bulk, .3 drain) here, for callgrind_annotate")
    args = ap.parse_args()
    global CG
    with tempfile.TemporaryDirectory() as d:
        server = (CallgrindServer if args.callgrind else RedisServer)(args.redis_server, Path(d))
        server.start()
        if args.callgrind and server.proc:
            CG = Callgrind(server.proc.pid, Path(d))
        try:
            r = redis.Redis.from_url(server.url)
            version = r.info("server")["redis_version"]
            runs = [one_run(r, server.url, args.n, args.keep, str(i)) for i in range(args.reps)]
        finally:
            server.stop()
            if args.profiles and CG:
                args.profiles.mkdir(parents=True, exist_ok=True)
                for dump in Path(d).glob("cg.*"):
                    shutil.copy(dump, args.profiles)
    print(f"N={args.n}, reps={args.reps}, Redis {version}, keep={args.keep}\n")
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
