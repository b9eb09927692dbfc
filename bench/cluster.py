#!/usr/bin/env python3
"""runtime on a 3-master Redis Cluster against one standalone Redis: jobs lost, run twice,
served per master, jobs/s and Redis CPU per job; then a master SIGKILLed mid-drain.

    python bench/cluster.py                       # 60,000 jobs, 6 queues, 3 workers, 1 rep
    python bench/cluster.py --reps 3 --jobs 20000
    python bench/cluster.py --replicas 0 --no-failover

Servers, all from ``--redis-server`` on free loopback ports, stopped by pid: a cluster of 3
masters, each with ``--replicas`` replicas (CLUSTER REPLICATE; ``cluster-node-timeout``
``--node-timeout-ms``), a standalone redis-server with as many replicas (REPLICAOF), and
a ledger redis-server where each task appends its job id (``bench.rt_tasks.ledger_noop``):
runs are counted apart from the Redis under test, whose CPU they would add to and whose
failover may lose its last writes.

Drain (per rep, standalone then cluster, each on a fresh key prefix): ``--jobs`` no-op jobs
queued in bulk (``Client.queue_jobs``, 1,000 per call) over ``--queues`` queues whose hash
slots spread evenly over the masters, then ``--workers`` worker processes (``runtime
worker --burst``, each serving every queue) run them. Counted: jobs lost (not success at
the end), jobs run twice (ids twice in the ledger), jobs served per master, drain jobs/s
(spawn to the last exit) and the Redis CPU (``INFO cpu`` user + sys deltas, summed over
the masters) per job of the enqueue and of the drain.

Failover (once, on the cluster, replicas needed): the same jobs queued and the replicas
caught up, workers (not ``--burst``) start; once ``--kill-at`` of the jobs ran, one master
is SIGKILLed; its replica takes over after the node timeout. Counted once every job is
success (or ``--deadline`` passed): jobs lost, jobs run twice (at-least-once: a job whose
outcome write died with the master runs again once its claim expires; reported apart),
seconds from the kill to the promotion and to the end of the drain, workers still alive.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import redis.crc

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent), str(HERE)]  # tests/cluster.py, not this file

from cluster import Cluster, cluster_in  # noqa: E402
from throughput import RedisServer  # noqa: E402

from runtime.client import Client  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

TASK = "bench.rt_tasks.ledger_noop"


def cpu_s(r: redis.Redis) -> float:
    c = r.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def master_of(cl: Cluster, tag: str) -> int:
    """The port of the master owning the hash slot of ``tag``."""
    slot = redis.crc.key_slot(tag.encode())
    for lo, hi, master, *_ in cl.client(cl.masters[0]).execute_command("CLUSTER SLOTS"):
        if lo <= slot <= hi:
            return int(master[1])
    raise RuntimeError(f"no master owns slot {slot}")


def spread_queues(cl: Cluster, n: int) -> dict[str, int]:
    """``n`` queue names -> the port of the master owning their slot, as many on each master."""
    per = -(-n // len(cl.masters))
    out: dict[str, int] = {}
    for i in range(10_000):
        name = f"cq{i}"
        port = master_of(cl, name)
        if sum(1 for p in out.values() if p == port) < per:
            out[name] = port
        if len(out) == n:
            return out
    raise RuntimeError("no queue names spread over the masters")


def queue_all(url: str, prefix: str, queues: list[str], n: int) -> list[str]:
    client = Client(load_settings({"redis_url": url, "key_prefix": prefix}, env={}))
    ids: list[str] = []
    for i, q in enumerate(queues):
        share = n // len(queues) + (1 if i < n % len(queues) else 0)
        ids += client.queue_jobs(TASK, [{}] * share, queue=q, batch_size=1000)
    return ids


def start_workers(url: str, prefix: str, queues: list[str], args: argparse.Namespace, ledger: str,
                  burst: bool, folder: Path) -> list[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "runtime", "--redis", url, "--prefix", prefix, "worker", "--queues",
            ",".join(queues), "--tasks", "bench.rt_tasks", "--greenlets", str(args.greenlets),
            "--log-level", "WARNING", *(["--burst"] if burst else [])]
    env = {**os.environ, "BENCH_LEDGER_URL": ledger, "RUNTIME_VISIBILITY_TIMEOUT_S": str(args.visibility_s)}
    return [subprocess.Popen(argv, cwd=HERE.parent, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=(folder / f"{prefix}-w{i}.log").open("wb"),
                             start_new_session=True) for i in range(args.workers)]


def not_success(url: str, prefix: str, ids: list[str]) -> list[str]:
    """The ids whose job is not in its queue's success index."""
    client = Client(load_settings({"redis_url": url, "key_prefix": prefix}, env={}))
    by_queue: dict[str, list[str]] = collections.defaultdict(list)
    for i in ids:
        by_queue[i.split(":", 1)[0]].append(i)
    out = []
    for q, qids in by_queue.items():
        key = client.broker.keys.status(q, "success")
        for k in range(0, len(qids), 1000):
            chunk = qids[k:k + 1000]
            out += [i for i, s in zip(chunk, client.redis.zmscore(key, chunk)) if s is None]
    return out


def runs(ledger: redis.Redis) -> collections.Counter[str]:
    return collections.Counter(x.decode() for x in ledger.lrange("runs", 0, -1))


def drain(url: str, masters: dict[int, redis.Redis], queues: dict[str, int], prefix: str,
          args: argparse.Namespace, ledger: redis.Redis, ledger_url: str, folder: Path) -> dict[str, Any]:
    """Queue, then drain with burst workers; the figures of one run."""
    ledger.delete("runs")
    c0 = {p: cpu_s(r) for p, r in masters.items()}
    t0 = time.perf_counter()
    ids = queue_all(url, prefix, list(queues), args.jobs)
    t1 = time.perf_counter()
    c1 = {p: cpu_s(r) for p, r in masters.items()}
    for r in masters.values():
        r.config_resetstat()
    procs = start_workers(url, prefix, list(queues), args, ledger_url, True, folder)
    codes = [p.wait(args.deadline) for p in procs]
    t2 = time.perf_counter()
    c2 = {p: cpu_s(r) for p, r in masters.items()}
    calls: collections.Counter[str] = collections.Counter()
    for r in masters.values():
        calls.update({k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()})
    ran = runs(ledger)
    served = collections.Counter(dict.fromkeys(masters, 0))
    for job_id, times in ran.items():
        served[queues.get(job_id.split(":", 1)[0], 0)] += times
    return {"n": len(ids), "lost": len(not_success(url, prefix, ids)), "twice": sum(1 for v in ran.values() if v > 1),
            "never": len(set(ids) - set(ran)), "codes": codes, "enqueue_rate": len(ids) / (t1 - t0),
            "rate": len(ids) / (t2 - t1), "served": dict(served),
            "enqueue_cpu_us": sum(c1[p] - c0[p] for p in masters) / len(ids) * 1e6,
            "drain_cpu_us": sum(c2[p] - c1[p] for p in masters) / len(ids) * 1e6,
            "cpu_per_master_us": {p: (c2[p] - c1[p]) / len(ids) * 1e6 for p in masters},
            "calls": {k: v / len(ids) for k, v in calls.most_common() if k not in ("info", "config")}}


def idle_cpu_ms(servers: list[redis.Redis], seconds: float = 5.0) -> float:
    """CPU the ``servers`` spend idle, ms per second, summed."""
    c0 = sum(cpu_s(r) for r in servers)
    time.sleep(seconds)
    return (sum(cpu_s(r) for r in servers) - c0) / seconds * 1000


def wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    return False


def failover(cl: Cluster, queues: dict[str, int], args: argparse.Namespace, ledger: redis.Redis,
             ledger_url: str, folder: Path) -> dict[str, Any]:
    """Drain with long-running workers, SIGKILL a master once ``--kill-at`` of the jobs ran."""
    prefix = "failover"
    ledger.delete("runs")
    ids = queue_all(cl.url, prefix, list(queues), args.jobs)
    if not wait_for(cl.caught_up, 30):
        raise RuntimeError("replicas did not catch up")
    owner = master_of(cl, prefix)  # it also holds the registry: the harder case
    victim = owner if args.kill == "registry" else next(p for p in set(queues.values()) if p != owner)
    replica = cl.replicas[cl.masters.index(victim)]
    procs = start_workers(cl.url, prefix, list(queues), args, ledger_url, False, folder)
    t0 = time.monotonic()
    if not wait_for(lambda: ledger.llen("runs") >= args.kill_at * len(ids), args.deadline):
        raise RuntimeError(f"{args.kill_at:.0%} of the jobs did not run within {args.deadline} s")
    ran_at_kill = ledger.llen("runs")
    cl.kill(victim)
    t_kill = time.monotonic()
    promoted = wait_for(lambda: cl.client(replica).info("replication")["role"] == "master", 60)
    t_promoted = time.monotonic()
    left: list[str] = ids
    done = False
    while not done and time.monotonic() < t_kill + args.deadline:
        left = not_success(cl.url, prefix, left)
        done = not left
        if not done:
            time.sleep(0.5)
    t_end = time.monotonic()
    alive = sum(1 for p in procs if p.poll() is None)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    codes = [p.wait(60) for p in procs]
    ran = runs(ledger)
    return {"killed": "registry+queues" if victim == owner else "queues", "n": len(ids), "lost": len(left), "twice": sum(1 for v in ran.values() if v > 1),
            "never": len(set(ids) - set(ran)), "ran_at_kill": ran_at_kill, "promoted": promoted,
            "promote_s": t_promoted - t_kill, "drain_after_kill_s": t_end - t_kill, "total_s": t_end - t0,
            "alive": alive, "codes": codes, "log": log_summary(folder, prefix)}


def log_summary(folder: Path, prefix: str) -> str:
    """What the workers logged (WARNING and up), each distinct message once with its count:
    ids, ports and times blanked."""
    seen: collections.Counter[str] = collections.Counter()
    for path in folder.glob(f"{prefix}-w*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
                msg = line.split(" ", 3)[-1]
                seen[re.sub(r"[0-9a-f]{24}|\d+(\.\d+)?", "N", msg)[:160]] += 1
    return "".join(f"\n  {n} x {m}" for m, n in seen.most_common())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=60000)
    ap.add_argument("--queues", type=int, default=6)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--greenlets", type=int, default=100)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=1, help="replicas of each master (and of the standalone)")
    ap.add_argument("--node-timeout-ms", type=int, default=1500, help="cluster-node-timeout")
    ap.add_argument("--visibility-s", type=float, default=60.0, help="the workers' visibility_timeout_s")
    ap.add_argument("--kill-at", type=float, default=0.3, help="kill a master once this share of jobs ran")
    ap.add_argument("--kill", choices=["registry", "queues"], default="registry",
                    help="the master holding the deployment-wide keys (and queues), or one holding queues only")
    ap.add_argument("--deadline", type=float, default=600.0, help="seconds a drain may take")
    ap.add_argument("--keep", metavar="DIR", help="write the servers' and workers' logs here, and keep them")
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(args.keep or d)
        folder.mkdir(parents=True, exist_ok=True)
        servers = [RedisServer(args.redis_server, folder / name) for name in
                   ["ledger", "standalone"] + [f"replica{i}" for i in range(args.replicas)]]
        try:
            for s in servers:
                s.log.parent.mkdir()
                s.start()
            for s in servers[2:]:
                redis.Redis(port=s.port).replicaof("127.0.0.1", servers[1].port)
            print(report(args, folder, servers[0], servers[1]))
        finally:
            for s in servers:
                s.stop()
    return 0


def report(args: argparse.Namespace, folder: Path, ledger_server: RedisServer, standalone: RedisServer) -> str:
    ledger = redis.Redis(port=ledger_server.port)
    lines = [f"jobs={args.jobs} queues={args.queues} workers={args.workers} greenlets={args.greenlets} "
             f"replicas={args.replicas} node-timeout={args.node_timeout_ms}ms "
             f"Redis {ledger.info('server')['redis_version']}", ""]
    with cluster_in(folder / "cluster", 3, args.replicas, args.node_timeout_ms) as cl:
        queues = spread_queues(cl, args.queues)
        masters = {p: cl.client(p) for p in cl.masters}
        lines += [f"queues: {', '.join(f'{q}@{p}' for q, p in queues.items())}", "",
                  "| rep | Redis | lost | run twice | never run | served per master | enqueue jobs/s | "
                  "drain jobs/s | enqueue CPU µs/job | drain CPU µs/job | drain CPU per master µs/job | "
                  "worker exits |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
        sa = {standalone.port: redis.Redis(port=standalone.port)}
        calls = []
        for rep in range(args.reps):
            runs_ = {"standalone": lambda rep=rep: drain(standalone.url, sa, dict.fromkeys(queues, standalone.port),
                                                         f"sa{rep}", args, ledger, ledger_server.url, folder),
                     "cluster": lambda rep=rep: drain(cl.url, masters, queues, f"cl{rep}", args, ledger,
                                                      ledger_server.url, folder)}
            order = list(runs_) if rep % 2 == 0 else list(runs_)[::-1]  # neither always runs first
            got = {name: runs_[name]() for name in order}
            s, c = got["standalone"], got["cluster"]
            for name, x in got.items():
                calls.append(f"{rep} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in list(x["calls"].items())[:8]))
                lines.append(f"| {rep} | {name} | {x['lost']} | {x['twice']} | {x['never']} | "
                             f"{'/'.join(str(v) for v in x['served'].values())} | {x['enqueue_rate']:,.0f} | "
                             f"{x['rate']:,.0f} | {x['enqueue_cpu_us']:.1f} | {x['drain_cpu_us']:.1f} | "
                             f"{'/'.join(f'{v:.1f}' for v in x['cpu_per_master_us'].values())} | {x['codes']} |")
            lines.append(f"| {rep} | cluster/standalone | | | | | | | "
                         f"{c['enqueue_cpu_us'] / s['enqueue_cpu_us']:.2f} | {c['drain_cpu_us'] / s['drain_cpu_us']:.2f}"
                         f" | | |")
        lines += ["", "drain: commands per job, summed over the masters (the most called)", *calls, "",
                  f"idle: CPU of the standalone {idle_cpu_ms(list(sa.values())):.1f} ms/s, of the 3 masters "
                  f"{idle_cpu_ms(list(masters.values())):.1f} ms/s"]
        if not args.no_failover and args.replicas:
            f = failover(cl, queues, args, ledger, ledger_server.url, folder)
            lines += ["", "failover: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in f.items() if k != "log"),
                  "worker log (WARNING and up):" + (f["log"] or " nothing")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
