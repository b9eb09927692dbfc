#!/usr/bin/env python3
"""What runtime's observability costs: per-middleware cost per job, export stalls,
profiling and heap-diff overhead (issue 3 targets). Starts its own redis-server and a
local OTLP/HTTP receiver (tests/otlp_receiver.py); prints a markdown table, writes JSON.

    python bench/overhead.py            # ~2 min
    python bench/overhead.py --quick    # N/10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from otlp_receiver import Receiver  # noqa: E402
from throughput import RedisServer, WorkerProc  # noqa: E402

from runtime.broker.embedded import redis_server_binary  # noqa: E402
from runtime.client import Client  # noqa: E402
from runtime.settings import Settings, load_settings  # noqa: E402

DEFAULT = Settings().middleware
M = {
    "tracing": "diagnostics.tracing.Tracing",
    "metrics": "diagnostics.metrics.Metrics",
    "timing": "diagnostics.timing.Timing",
    "memory": "diagnostics.memory.Memory",
    "logs": "diagnostics.logs.Logs",
}


class Runner:
    def __init__(self, url: str, otlp: str, tmp: Path) -> None:
        self.url, self.otlp, self.tmp, self.n = url, otlp, tmp, 0

    def client(self, prefix: str) -> Client:
        return Client(load_settings({"redis_url": self.url, "key_prefix": prefix, "middleware": ""}, env={}))

    def worker(self, prefix: str, greenlets: int, burst: bool, **env: str) -> WorkerProc:
        self.n += 1
        old = dict(os.environ)
        os.environ.update({f"RUNTIME_{k.upper()}": v for k, v in env.items()})
        try:
            w = WorkerProc(self.url, prefix, greenlets, burst, self.tmp / f"w{self.n}.log")
            return w.start()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def drain(self, n: int, middleware: tuple[str, ...], task: str = "tasks_example.work.noop") -> float:
        prefix = f"ovh{self.n}"
        c = self.client(prefix)
        ids = c.queue_jobs(task, [{}] * n, queue="bench")
        w = self.worker(prefix, 100, True, middleware=",".join(middleware), otlp_endpoint=self.otlp)
        w.wait_exit(300)
        w.stop()
        jobs = c.store.get_many(ids, history=False)
        assert all(j.status == "success" for j in jobs), w.log_tail()
        rate = (n - 1) / (max(j.ended_at for j in jobs) - min(j.started_at for j in jobs))
        self.cleanup(c, prefix)
        return rate

    def lag(self, n: int, middleware: tuple[str, ...]) -> dict[str, Any]:
        prefix = f"lag{self.n}"
        c = self.client(prefix)
        probe = c.queue_job("bench.rt_tasks.lag_probe", {"seconds": 3.0}, queue="bench", priority=10)
        c.queue_jobs("bench.rt_tasks.progress_noop", [{}] * n, queue="bench")
        w = self.worker(prefix, 100, True, middleware=",".join(middleware), otlp_endpoint=self.otlp)
        w.wait_exit(300)
        w.stop()
        out = c.get_job(probe).result
        self.cleanup(c, prefix)
        return out

    def export_stall(self, export: bool) -> dict[str, Any]:
        """lag_probe beside span_burst (spans as fast as a yielding greenlet makes them) in a
        worker of 2 greenlets, with the spans exported over OTLP or not exported at all: the
        difference is the stall that exporting imposes on a running greenlet."""
        prefix = f"stall{self.n}"
        c = self.client(prefix)
        probe = c.queue_job("bench.rt_tasks.lag_probe", {"seconds": 3.0}, queue="bench")
        burst = c.queue_job("bench.rt_tasks.span_burst", {"seconds": 3.2}, queue="bench")
        env = {"middleware": "diagnostics.tracing.Tracing"}
        if export:
            env["otlp_endpoint"] = self.otlp
        w = self.worker(prefix, 2, True, **env)
        w.wait_exit(300)
        w.stop()
        out = dict(c.get_job(probe).result, spans=c.get_job(burst).result)
        self.cleanup(c, prefix)
        return out

    def run_s(self, task: str, params: dict[str, Any], n: int, **env: str) -> float:
        prefix = f"run{self.n}"
        c = self.client(prefix)
        ids = c.queue_jobs(task, [params] * n, queue="bench")
        w = self.worker(prefix, 1, True, **env)
        w.wait_exit(300)
        w.stop()
        runs = [j.run_s for j in c.store.get_many(ids, history=False)]
        self.cleanup(c, prefix)
        return statistics.median(runs)

    def heap_cost(self, n: int) -> dict[str, float]:
        out = {}
        for label, env in (("off", {}), ("on", {"trace_memory": "bench.rt_tasks.allocate"})):
            prefix = f"heap{self.n}"
            c = self.client(prefix)
            first = c.queue_job("bench.rt_tasks.ballast", {"mb": 200}, queue="bench")
            ids = c.queue_jobs("bench.rt_tasks.allocate", [{"n": 20000}] * n, queue="bench")
            w = self.worker(prefix, 4, True, **env)
            w.wait_exit(600)
            w.stop()
            out[f"rss_mb_{label}"] = c.get_job(first).result / 2**20
            out[f"run_ms_{label}"] = 1000 * statistics.median(j.run_s for j in c.store.get_many(ids, history=False))
            self.cleanup(c, prefix)
        return out

    def cleanup(self, c: Client, prefix: str) -> None:
        keys = list(c.redis.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            c.redis.delete(*keys[i:i + 1000])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    n = 2000 if args.quick else 20000
    tmp = Path(tempfile.mkdtemp(prefix="runtime-overhead-"))
    server = RedisServer(redis_server_binary(), tmp)
    server.start()
    res: dict[str, Any] = {"n_drain": n}
    try:
        with Receiver() as otlp:
            r = Runner(server.url, otlp.url, tmp)
            rows = [("none", ())] + [(k, (v,)) for k, v in M.items()] + [("all default middleware", DEFAULT)]
            rates = {}
            for label, mw in rows:
                rates[label] = r.drain(n, mw)
                print(f"  drain with {label}: {rates[label]:,.0f} jobs/s", file=sys.stderr)
            base = 1e6 / rates["none"]
            res["drain"] = {k: {"jobs_per_s": v, "us_per_job": 1e6 / v - base} for k, v in rates.items()}
            res["drain_all_with_progress"] = r.drain(n, DEFAULT, task="bench.rt_tasks.progress_noop")
            res["spans_received"] = len(otlp.spans)
            res["lag_tracing_export"] = r.lag(n // 2, DEFAULT)
            res["lag_no_middleware"] = r.lag(n // 2, ())
            res["stall_exporting"] = r.export_stall(True)
            res["stall_not_exporting"] = r.export_stall(False)
            # a CPU-bound job of about 200 ms (pure-Python frames, so the sampler has work)
            prof = {"off": r.run_s("bench.rt_tasks.cpu_200ms", {}, 5),
                    "on": r.run_s("bench.rt_tasks.cpu_200ms", {}, 5, profile="*")}
            prof["overhead_pct"] = 100 * (prof["on"] / prof["off"] - 1)
            res["profile_cpu_job"] = prof
            res["heap_diff"] = r.heap_cost(5)
    finally:
        server.stop()
    print(report(res))
    out = args.json or REPO / "bench" / "results" / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {out}")
    return 0


def report(res: dict[str, Any]) -> str:
    lines = ["# runtime observability overhead", "",
             f"no-op drain, 1 worker process, 100 greenlets, N={res['n_drain']:,}; exporters send to a local OTLP/HTTP receiver", "",
             "| middleware on | jobs/s | cost per job (µs) |", "|---|---|---|"]
    for k, v in res["drain"].items():
        lines.append(f"| {k} | {v['jobs_per_s']:,.0f} | {v['us_per_job']:+.1f} |")
    lines.append(f"| all default + set_progress in the task | {res['drain_all_with_progress']:,.0f} | |")
    lt, ln = res["lag_tracing_export"], res["lag_no_middleware"]
    p, h = res["profile_cpu_job"], res["heap_diff"]
    se, sn = res["stall_exporting"], res["stall_not_exporting"]
    lines += ["",
              f"greenlet stall (1 ms sleeps late by) during a traced, exporting drain: p50 {lt['p50_ms']:.2f} ms, "
              f"p99 {lt['p99_ms']:.2f} ms, max {lt['max_ms']:.1f} ms (no middleware: p99 {ln['p99_ms']:.2f} ms, "
              f"max {ln['max_ms']:.1f} ms); spans received {res['spans_received']:,}",
              f"export stall (1 ms sleeps late by, beside a greenlet making spans as fast as it can): exporting "
              f"p50 {se['p50_ms']:.2f} ms, p99 {se['p99_ms']:.2f} ms, max {se['max_ms']:.1f} ms ({se['spans']:,} spans); "
              f"tracing off (the burst makes no-op spans): p99 {sn['p99_ms']:.2f} ms, max {sn['max_ms']:.1f} ms",
              f"--profile on a CPU-bound job: {p['off'] * 1000:.0f} ms -> {p['on'] * 1000:.0f} ms ({p['overhead_pct']:+.1f} %)",
              f"--trace-memory on a worker holding {h['rss_mb_on']:.0f} MB: allocate(20k dicts) {h['run_ms_off']:.1f} ms -> "
              f"{h['run_ms_on']:.1f} ms per job (tracemalloc on, snapshots, the job run alone)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
