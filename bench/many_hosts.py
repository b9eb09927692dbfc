#!/usr/bin/env python3
"""Issue 13's targets: dead workers on other hosts, a Sentinel failover, a corrupt document.

    python bench/many_hosts.py                      # all three, full sizes
    python bench/many_hosts.py --scenarios kill --n-kill 6000

Scenarios (each on a redis-server of its own, started and stopped by pid here; workers are
real ``python -m runtime worker`` processes with default liveness settings, each with its
own host name through ``RUNTIME_HOSTNAME``):

  kill      N jobs of ``tasks_example.work.io_wait`` (20 ms) drained by 6 workers on 6
            "hosts", 20 greenlets each; once a sixth are done, 2 workers are SIGKILLed.
            Prints the seconds from the kill until none of their jobs is held any more
            (requeued by the reapers of the other hosts), the jobs lost (not success at
            the end: target 0), and how many were charged a lost life against how many
            the dead workers had started (their start records, read right after the kill).
  failover  N jobs of 50 ms on 1 master + 1 replica + 3 Sentinels, 4 workers of 50
            greenlets on redis+sentinel://; ``SENTINEL FAILOVER`` once a third are done.
            Prints jobs lost (target 0), jobs whose outcome is missing, jobs that ran
            twice (more than one ``started`` history entry), and the longest gap between
            two job ends around the failover (how long the workers took to follow);
            "failover-wait" again with wait_replicas = 1 (producer and workers).
  corrupt   1,000 no-op jobs, one with ``priority`` set to ``abc``; one worker process.
            Prints the drain time against a clean run of 1,000 (target within 10 %),
            and the statuses (target 999 success, 1 failed bad-document).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.broker.embedded import redis_server_binary  # noqa: E402
from runtime.client import Client  # noqa: E402
from runtime.settings import load_settings  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(tmp: Path, procs: list[subprocess.Popen[bytes]], *args: str) -> None:
    procs.append(subprocess.Popen([redis_server_binary(), *args], cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT))


def _wait(cond: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _worker(url: str, prefix: str, host: str, tmp: Path, *args: str, **settings: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env.update(RUNTIME_REDIS_URL=url, RUNTIME_KEY_PREFIX=prefix, RUNTIME_HOSTNAME=host,
               PYTHONPATH=str(ROOT), **{f"RUNTIME_{k.upper()}": str(v) for k, v in settings.items()})
    log = open(tmp / f"{host}.log", "wb")  # noqa: SIM115 - the process writes it
    return subprocess.Popen([sys.executable, "-m", "runtime", "worker", *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _done(client: Client, ids: list[str]) -> int:
    """How many of ``ids`` ended (0 while Redis is away: a failover)."""
    try:
        return sum(1 for j in client.store.get_many(ids) if j.is_final)
    except redis.RedisError:
        return 0


def kill_scenario(n: int, tmp: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    port = _port()
    _server(tmp, procs, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _ping(url), 10, "redis-server")
    client = Client(load_settings({"redis_url": url, "key_prefix": "kill"}, env={}))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        ids: list[str] = []
        for i in range(0, n, 1000):
            ids += client.queue_jobs("tasks_example.work.io_wait", [{"seconds": 0.02}] * min(1000, n - i))
        workers = [_worker(url, "kill", f"host-{i}", tmp, "--greenlets", "20") for i in range(6)]
        _wait(lambda: _done(client, ids[: n // 6]) >= n // 6 - 50, 300, "a sixth of the jobs")
        victims = workers[:2]
        wids = [w for w in client.broker.registry.ids() if w.split(".")[1] in {str(p.pid) for p in victims}]
        for p in victims:
            p.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        keys = client.broker.keys
        held = set().union(*(client.redis.smembers(keys.running(w, "default")) for w in wids))
        started = {j for j in held if client.redis.hget(keys.job(j), "began") == client.redis.hget(keys.job(j), "attempt")}
        for p in victims:
            p.wait(10)
        _wait(lambda: not any(client.redis.exists(keys.running(w, "default")) for w in wids), 120, "the dead workers' jobs")
        taken_back = time.monotonic() - killed
        _wait(lambda: _done(client, ids) == n, 600, "the drain")
        jobs = client.store.get_many(ids)
        charged = {j.id for j in jobs if j.lost}
        return {"jobs": n, "held_by_dead": len(held), "started_by_dead": len(started),
                "taken_back_s": round(taken_back, 2), "lost": sum(1 for j in jobs if j.status.value != "success"),
                "charged": len(charged), "charged_not_started": len(charged - started)}
    finally:
        _stop(workers + procs)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def failover_scenario(n: int, tmp: Path, wait_replicas: int = 0, down_after_ms: int = 1000) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    master, replica = _port(), _port()
    base = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    _server(tmp, procs, "--port", str(master), *base)
    _server(tmp, procs, "--port", str(replica), *base, "--replicaof", "127.0.0.1", str(master))
    ports = []
    for i in range(3):
        ports.append(port := _port())
        conf = tmp / f"sentinel-{i}.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 2\n"
                        f"sentinel down-after-milliseconds mymaster {down_after_ms}\n"
                        "sentinel failover-timeout mymaster 10000\n")
        _server(tmp, procs, str(conf), "--sentinel")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        _wait(lambda: redis.Redis(port=replica).info("replication").get("master_link_status") == "up", 30, "sync")
        _wait(lambda: all(redis.Redis(port=p).sentinel_master("mymaster").get("num-other-sentinels") == 2
                          for p in ports), 30, "the Sentinels")
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster"
        client = Client(load_settings({"redis_url": url, "key_prefix": "fo", "wait_replicas": wait_replicas}, env={}))
        ids: list[str] = []
        for i in range(0, n, 1000):
            ids += client.queue_jobs("tasks_example.work.io_wait", [{"seconds": 0.05}] * min(1000, n - i))
        workers = [_worker(url, "fo", f"host-{i}", tmp, "--greenlets", "50", wait_replicas=wait_replicas)
                   for i in range(4)]
        began = time.monotonic()
        _wait(lambda: _done(client, ids[: n // 3]) >= n // 3 - 100, 300, "a third of the jobs")
        at = time.time()
        redis.Redis(port=ports[0]).execute_command("SENTINEL", "FAILOVER", "mymaster")
        _wait(lambda: _done(client, ids) == n, 900, "the drain")
        drain_s = time.monotonic() - began
        jobs = client.store.get_many(ids)
        ends = sorted(j.ended_at for j in jobs if j.ended_at and at - 5 < j.ended_at < at + 60)
        gap = max((b - a for a, b in zip(ends, ends[1:])), default=0.0)
        return {"jobs": n, "wait_replicas": wait_replicas, "drain_s": round(drain_s, 1),
                "lost": sum(1 for j in jobs if j.status.value != "success"),
                "outcome_missing": sum(1 for j in jobs if j.status.value == "success" and j.ended_at is None),
                "ran_twice": sum(1 for j in jobs if [h["status"] for h in j.history].count("started") > 1),
                "longest_gap_s": round(gap, 2)}
    finally:
        _stop(workers + procs)


def corrupt_scenario(n: int, tmp: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    sock = tmp / "corrupt.sock"
    _server(tmp, procs, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no")
    url = f"unix://{sock}"
    _wait(lambda: sock.exists() and _ping(url), 10, "redis-server")
    out: dict[str, Any] = {}
    try:
        for run, corrupt in (("clean", False), ("corrupt", True), ("clean2", False)):
            client = Client(load_settings({"redis_url": url, "key_prefix": run}, env={}))
            ids = client.queue_jobs("tasks_example.work.noop", [{}] * n)
            if corrupt:
                client.redis.hset(client.broker.keys.job(ids[n // 2]), "priority", "abc")
            began = time.monotonic()
            w = _worker(url, run, "host-0", tmp, "--burst", "--greenlets", "50")
            w.wait(300)
            out[f"{run}_s"] = round(time.monotonic() - began, 2)
            if corrupt:
                statuses = Counter(f"{j.status.value} {j.reason or ''}".strip() for j in client.store.get_many(ids))
                out["statuses"] = dict(statuses)
        return out
    finally:
        _stop(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="kill,failover,failover-wait,corrupt")
    ap.add_argument("--n-kill", type=int, default=60_000)
    ap.add_argument("--n-failover", type=int, default=20_000)
    ap.add_argument("--n-corrupt", type=int, default=1_000)
    ap.add_argument("--down-after-ms", type=int, default=1000, help="the Sentinels' down-after-milliseconds")
    a = ap.parse_args()
    runs = {"kill": lambda t: kill_scenario(a.n_kill, t),
            "failover": lambda t: failover_scenario(a.n_failover, t, down_after_ms=a.down_after_ms),
            "failover-wait": lambda t: failover_scenario(a.n_failover, t, wait_replicas=1, down_after_ms=a.down_after_ms),
            "corrupt": lambda t: corrupt_scenario(a.n_corrupt, t)}
    for name in a.scenarios.split(","):
        with tempfile.TemporaryDirectory(prefix=f"rt-{name}-") as tmp:
            print(name, runs[name](Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
