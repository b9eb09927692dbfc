#!/usr/bin/env python3
"""Throughput, latency and memory of runtime on one Redis, one worker process.

    python bench/throughput.py                 # own redis-server on a free port, full N
    python bench/throughput.py --quick         # N/20, a smoke test (~1 min)
    python bench/throughput.py --redis redis://127.0.0.1:6379/0   # an existing server
    python bench/throughput.py --scenarios drain,latency

Scenarios (each on its own key prefix; the keys are deleted afterwards):
  enqueue  a. N no-op jobs, one ``Client.queue_job`` call each; then ``queue_jobs`` in
              batches of 1,000 (one round trip per batch)
  drain    b. N pre-enqueued ``tasks_example.work.noop`` jobs run by ONE worker process
              started after the enqueue (``python -m runtime ... worker --burst
              --greenlets 100``); jobs/s = (N-1) / (last ended_at - first started_at),
              read from the job documents; wall time = spawn -> worker exit
  io       c. N jobs of ``tasks_example.work.io_wait`` (10 ms sleep), 50 greenlets, one
              worker process: jobs/s and % of the ideal 50 / 0.010 s = 5,000 jobs/s
  latency  d. idle running worker, probes (``bench.rt_tasks.stamp``) one at a time:
              enqueue->start = job.started_at (Redis clock) - client time.time() just
              before queue_job (same host, same clock); cross-checked with the time.time()
              the task body returns; enqueue->done = until ``Client.wait(id)`` returns;
              p50/p99 in ms
           e. idle worker RSS (psutil) after start-up + warm-up probes + 1 s
  capped   f. the drain of b. without a cap and under a cap of 50 (``max_concurrency=50``,
              runtime.caps), alternated twice (A B A B) in this run: jobs/s of each and
              capped / uncapped in %

Prints a markdown table and writes JSON (default bench/results/throughput-<ts>.json).
Stdlib + redis + psutil + the runtime package. Workers and the redis-server this script
starts are stopped by pid. Exit code 1 when any scenario failed (the rest still run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import psutil
import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from runtime.client import Client  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

NOOP = "tasks_example.work.noop"
IO_WAIT = "tasks_example.work.io_wait"
STAMP = "bench.rt_tasks.stamp"  # returns time.time() at body start
TASK_MODULES = "tasks_example,bench.rt_tasks"
QUEUE = "bench"
ALL = ["enqueue", "drain", "io", "latency", "capped"]
NOOP_CAP50 = "bench.rt_tasks.noop_cap50"  # the same no-op under max_concurrency=50


# ----------------------------------------------------------------------------- helpers

def pct(sorted_vals: list[float], q: float) -> float | None:
    """Nearest-rank percentile (as peerbench computes it)."""
    if not sorted_vals:
        return None
    k = max(0, math.ceil(q / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away redis-server (no persistence) on a free 127.0.0.1 port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log),
                "--dir", str(self.log.parent)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited rc={self.proc.returncode}; see {self.log}")
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class WorkerProc:
    """``python -m runtime ... worker`` as a subprocess in its own session, stopped by pid."""

    def __init__(self, url: str, prefix: str, greenlets: int | None, burst: bool, log_path: Path) -> None:
        self.argv = [sys.executable, "-m", "runtime", "--redis", url, "--prefix", prefix, "worker",
                     "--queues", QUEUE, "--tasks", TASK_MODULES, "--log-level", "WARNING"]
        if greenlets:
            self.argv += ["--greenlets", str(greenlets)]
        if burst:
            self.argv.append("--burst")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_spawn = 0.0
        self.t_exit: float | None = None
        self.peak_rss = 0

    def start(self) -> WorkerProc:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for k in ("RUNTIME_REDIS_URL", "RUNTIME_KEY_PREFIX", "RUNTIME_GREENLETS", "RUNTIME_QUEUES"):
            env.pop(k, None)  # the command line says it all
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the worker process writes it
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(self.argv, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        try:
            r = psutil.Process(self.pid).memory_info().rss
        except psutil.Error:
            return 0
        self.peak_rss = max(self.peak_rss, r)
        return r

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for a burst worker to exit, sampling its RSS; raises TimeoutError."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.t_exit = time.time()
                return rc
            self.rss()
            time.sleep(0.05)
        raise TimeoutError(f"worker pid {self.pid} still running after {timeout_s} s; log tail:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.t_exit is None:
            self.t_exit = time.time()
        self._log.close()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, workdir: Path) -> None:
        self.args = args
        self.url = url
        self.workdir = workdir
        self.raw = redis.Redis.from_url(url, decode_responses=True)
        self.run_id = f"{int(time.time())}-{os.getpid()}"
        self.prefixes: list[str] = []

    def client(self, scenario: str) -> Client:
        prefix = f"bench-{scenario}-{self.run_id}"
        self.prefixes.append(prefix)
        return Client(load_settings({"redis_url": self.url, "key_prefix": prefix}, env={}))

    def cleanup(self, prefix: str) -> int:
        if self.args.keep_keys:
            return 0
        n = 0
        batch: list[str] = []
        for key in self.raw.scan_iter(match=prefix + ":*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                n += self.raw.unlink(*batch)
                batch.clear()
        if batch:
            n += self.raw.unlink(*batch)
        return n

    def ready_len(self, c: Client) -> int:
        return int(self.raw.zcard(c.broker.keys.ready(QUEUE)))

    # -------------------------------------------------------------------- scenarios

    def s_enqueue(self, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {"n": n, "notes": []}
        c = self.client("enqueue-one")
        t = time.perf_counter()
        for _ in range(n):
            c.queue_job(NOOP, {}, queue=QUEUE)
        dt = time.perf_counter() - t
        qlen = self.ready_len(c)
        if qlen != n:
            out["notes"].append(f"one-by-one: queue length {qlen}, expected {n}")
        out["one_jobs_per_s"] = n / dt
        out["one_seconds"] = dt
        out["one_us_per_job"] = dt / n * 1e6
        out["cleaned_keys_one"] = self.cleanup(c.settings.key_prefix)

        c = self.client("enqueue-bulk")
        batch = self.args.bulk_batch
        batches = [[{} for _ in range(min(batch, n - i))] for i in range(0, n, batch)]
        mem0 = int(self.raw.info("memory")["used_memory"])
        t = time.perf_counter()
        for b in batches:
            c.queue_jobs(NOOP, b, queue=QUEUE, batch_size=batch)
        dt = time.perf_counter() - t
        qlen = self.ready_len(c)
        if qlen != n:
            out["notes"].append(f"bulk: queue length {qlen}, expected {n}")
        out["bulk_jobs_per_s"] = n / dt
        out["bulk_seconds"] = dt
        out["bulk_batch"] = batch
        # Redis memory one queued job costs (document, history, queue + status index
        # entries); only meaningful on a server nobody else uses meanwhile
        out["redis_bytes_per_queued_job"] = (int(self.raw.info("memory")["used_memory"]) - mem0) / n
        out["cleaned_keys_bulk"] = self.cleanup(c.settings.key_prefix)
        return out

    def _drain(self, scenario: str, path: str, params: dict[str, Any], n: int, greenlets: int) -> dict[str, Any]:
        c = self.client(scenario)
        out: dict[str, Any] = {"n": n, "greenlets": greenlets, "task": path, "params": params, "notes": []}
        t = time.perf_counter()
        ids: list[str] = []
        for i in range(0, n, 1000):
            ids += c.queue_jobs(path, [dict(params) for _ in range(min(1000, n - i))], queue=QUEUE)
        out["prefill_s"] = time.perf_counter() - t
        qlen = self.ready_len(c)
        if qlen != n:
            out["notes"].append(f"queue length before the worker started: {qlen}, expected {n}")
        w = WorkerProc(self.url, c.settings.key_prefix, greenlets, True,
                       self.workdir / f"worker-{scenario}.log").start()
        out["worker_argv"] = " ".join(w.argv)
        try:
            rc = w.wait_exit(self.args.timeout)
        finally:
            w.stop()
        out["worker_rc"] = rc
        if rc != 0:
            out["notes"].append(f"worker exit code {rc}; log tail: {w.log_tail(500)}")
        # read every job document: status, started_at, ended_at, attempt
        statuses: dict[str, int] = {}
        starts: list[float] = []
        ends: list[float] = []
        attempts_over_1 = 0
        for i in range(0, n, 2000):
            pipe = self.raw.pipeline(transaction=False)
            for jid in ids[i:i + 2000]:
                pipe.hmget(c.broker.keys.job(jid), "status", "started_at", "ended_at", "attempt")
            for st, s, e, a in pipe.execute():
                statuses[st or "missing"] = statuses.get(st or "missing", 0) + 1
                if s:
                    starts.append(float(s))
                if e:
                    ends.append(float(e))
                if a and int(a) > 1:
                    attempts_over_1 += 1
        out["statuses"] = statuses
        out["attempts_over_1"] = attempts_over_1
        ok = statuses.get("success", 0)
        if ok != n:
            raise RuntimeError(f"{scenario}: {ok} of {n} jobs succeeded after the burst worker exited: "
                               f"{statuses}; worker log tail:\n{w.log_tail(1500)}")
        first, last = min(starts), max(ends)
        out["drain_s"] = last - first
        out["jobs_per_s"] = (n - 1) / (last - first) if n > 1 else None
        out["startup_s"] = first - w.t_spawn
        out["wall_s"] = (w.t_exit or time.time()) - w.t_spawn
        out["jobs_per_s_incl_startup"] = n / (last - w.t_spawn)
        out["jobs_per_s_wall"] = n / out["wall_s"]
        out["shutdown_s"] = (w.t_exit or time.time()) - last
        out["peak_rss_mb"] = w.peak_rss / 2**20
        out["cleaned_keys"] = self.cleanup(c.settings.key_prefix)
        return out

    def s_drain(self, n: int) -> dict[str, Any]:
        return self._drain("drain", NOOP, {}, n, self.args.greenlets_drain)

    def s_capped(self, n: int) -> dict[str, Any]:
        g = self.args.greenlets_drain
        runs = {"uncapped": [], "capped": []}
        for _ in range(2):
            runs["uncapped"].append(self._drain("capped-a", NOOP, {}, n, g)["jobs_per_s"])
            runs["capped"].append(self._drain("capped-b", NOOP_CAP50, {}, n, g)["jobs_per_s"])
        out: dict[str, Any] = {"n": n, "greenlets": g, "runs": runs}
        out["uncapped_jobs_per_s"] = sum(runs["uncapped"]) / 2
        out["capped_jobs_per_s"] = sum(runs["capped"]) / 2
        out["pct_of_uncapped"] = out["capped_jobs_per_s"] / out["uncapped_jobs_per_s"] * 100
        return out

    def s_io(self, n: int) -> dict[str, Any]:
        g = self.args.greenlets_io
        out = self._drain("io", IO_WAIT, {"seconds": 0.01}, n, g)
        out["ideal_jobs_per_s"] = g / 0.010
        out["pct_of_ideal"] = out["jobs_per_s"] / out["ideal_jobs_per_s"] * 100
        return out

    def s_latency(self, n: int) -> dict[str, Any]:
        c = self.client("latency")
        out: dict[str, Any] = {"n": n, "notes": [], "task": STAMP}
        w = WorkerProc(self.url, c.settings.key_prefix, self.args.greenlets_latency, False,
                       self.workdir / "worker-latency.log").start()
        out["worker_argv"] = " ".join(w.argv)
        out["greenlets"] = self.args.greenlets_latency or load_settings(env={}).greenlets
        try:
            first = c.queue_job(STAMP, {}, queue=QUEUE)
            c.wait(first, 60)
            out["ready_s"] = time.time() - w.t_spawn
            for _ in range(10):  # warm-up through the measured path
                c.wait(c.queue_job(STAMP, {}, queue=QUEUE), 30)
            time.sleep(1.0)
            out["idle_rss_mb"] = w.rss() / 2**20
            start_ms: list[float] = []
            body_ms: list[float] = []
            done_ms: list[float] = []
            bad: dict[str, int] = {}
            for _ in range(n):
                if not w.alive():
                    raise RuntimeError(f"worker exited (rc={w.proc.returncode}); log:\n{w.log_tail()}")
                t0 = time.time()
                jid = c.queue_job(STAMP, {}, queue=QUEUE)
                job = c.wait(jid, 30)
                t1 = time.time()
                if job.status.value != "success":
                    bad[job.status.value] = bad.get(job.status.value, 0) + 1
                done_ms.append((t1 - t0) * 1000)
                if job.started_at is not None:
                    start_ms.append((job.started_at - t0) * 1000)
                if isinstance(job.result, float):
                    body_ms.append((job.result - t0) * 1000)
            out["rss_after_mb"] = w.rss() / 2**20
            if bad:
                out["notes"].append(f"probes not success: {bad}")
        finally:
            w.stop()
        st, dn, bd = sorted(start_ms), sorted(done_ms), sorted(body_ms)
        if len(st) != n:
            out["notes"].append(f"{n - len(st)} probes without started_at")
        neg = sum(1 for x in st if x < 0)
        if neg:
            out["notes"].append(f"{neg} probes with started_at before the client's t0 (clock skew?)")
        out.update(start_p50_ms=pct(st, 50), start_p99_ms=pct(st, 99), start_max_ms=st[-1] if st else None,
                   body_start_p50_ms=pct(bd, 50), body_start_p99_ms=pct(bd, 99),
                   done_p50_ms=pct(dn, 50), done_p99_ms=pct(dn, 99), done_max_ms=dn[-1] if dn else None,
                   done_mean_ms=sum(dn) / len(dn) if dn else None)
        out["cleaned_keys"] = self.cleanup(c.settings.key_prefix)
        return out


# ------------------------------------------------------------------------------ report

def fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def report(res: dict[str, Any]) -> str:
    L = ["# runtime throughput", "",
         f"{res['meta']['started']}  ·  runtime {res['meta']['git_commit'] or res['meta'].get('runtime_file')}  ·  "
         f"{res['meta']['cpus']} CPUs  ·  Python {res['meta']['python']}  ·  Redis {res['meta']['redis_version']}"
         f"{' (own server)' if res['meta']['own_server'] else ''}", "",
         "| scenario | metric | value |", "|---|---|---|"]
    s = res["scenarios"]

    def row(scn: str, metric: str, value: str) -> None:
        L.append(f"| {scn} | {metric} | {value} |")

    if "enqueue" in s and s["enqueue"].get("ok"):
        e = s["enqueue"]
        row("a. enqueue", f"queue_job, one call per job (N={e['n']:,})", f"{fmt(e['one_jobs_per_s'])} jobs/s")
        row("a. enqueue", f"queue_jobs, batches of {e['bulk_batch']:,}", f"{fmt(e['bulk_jobs_per_s'])} jobs/s")
        row("a. enqueue", "Redis memory per queued no-op job", f"{fmt(e['redis_bytes_per_queued_job'])} bytes")
    if "drain" in s and s["drain"].get("ok"):
        d = s["drain"]
        row("b. drain", f"no-op, 1 process, {d['greenlets']} greenlets (N={d['n']:,})", f"{fmt(d['jobs_per_s'])} jobs/s")
        row("b. drain", "start-up (spawn → first job started)", f"{fmt(d['startup_s'], 2)} s")
        row("b. drain", "jobs/s incl. start-up / whole wall (spawn → exit)",
            f"{fmt(d['jobs_per_s_incl_startup'])} / {fmt(d['jobs_per_s_wall'])} jobs/s ({fmt(d['wall_s'], 2)} s)")
        row("b. drain", "peak worker RSS", f"{fmt(d['peak_rss_mb'], 1)} MiB")
    if "io" in s and s["io"].get("ok"):
        d = s["io"]
        row("c. io", f"10 ms sleep, {d['greenlets']} greenlets (N={d['n']:,})",
            f"{fmt(d['jobs_per_s'])} jobs/s = {fmt(d['pct_of_ideal'])}% of {fmt(d['ideal_jobs_per_s'])}")
    if "latency" in s and s["latency"].get("ok"):
        d = s["latency"]
        row("d. latency", f"enqueue → start p50 / p99 (N={d['n']})",
            f"{fmt(d['start_p50_ms'], 2)} / {fmt(d['start_p99_ms'], 2)} ms")
        row("d. latency", "enqueue → task body's own time.time() p50 / p99 (cross-check)",
            f"{fmt(d['body_start_p50_ms'], 2)} / {fmt(d['body_start_p99_ms'], 2)} ms")
        row("d. latency", "enqueue → Client.wait returns p50 / p99",
            f"{fmt(d['done_p50_ms'], 2)} / {fmt(d['done_p99_ms'], 2)} ms")
        row("e. memory", f"idle worker RSS ({d['greenlets']} greenlets, after warm-up)",
            f"{fmt(d['idle_rss_mb'], 1)} MiB")
    if "capped" in s and s["capped"].get("ok"):
        d = s["capped"]
        row("f. capped", f"no-op drain, {d['greenlets']} greenlets, uncapped / cap 50 (N={d['n']:,}, A B A B)",
            f"{fmt(d['uncapped_jobs_per_s'])} / {fmt(d['capped_jobs_per_s'])} jobs/s = "
            f"{fmt(d['pct_of_uncapped'])}% (runs {d['runs']})")
    fails = {k: v for k, v in s.items() if not v.get("ok")}
    notes = [(k, n) for k, v in s.items() for n in v.get("notes", [])]
    if fails:
        L += ["", "## Failures", ""]
        L += [f"- {k}: {v.get('error', '?').splitlines()[0][:500]}" for k, v in fails.items()]
    if notes:
        L += ["", "## Notes", ""]
        L += [f"- {k}: {n[:500]}" for k, n in notes]
    return "\n".join(L)


def git_commit() -> str | None:
    """HEAD of the tree measured, with '+dirty' when runtime/ or tasks_example/ differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        if not head:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "runtime", "tasks_example"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one (keys are per-run prefixes)")
    g.add_argument("--redis-server", metavar="PATH", help="redis-server binary [default: runtime's, else PATH]")
    ap.add_argument("--scenarios", default=",".join(ALL), help=f"comma list of {','.join(ALL)}")
    ap.add_argument("--quick", action="store_true", help="N/20 (min 20): a smoke test")
    ap.add_argument("--n-enqueue", type=int, default=20_000)
    ap.add_argument("--n-drain", type=int, default=20_000)
    ap.add_argument("--n-io", type=int, default=2_000)
    ap.add_argument("--n-latency", type=int, default=300)
    ap.add_argument("--bulk-batch", type=int, default=1_000)
    ap.add_argument("--greenlets-drain", type=int, default=100)
    ap.add_argument("--greenlets-io", type=int, default=50)
    ap.add_argument("--greenlets-latency", type=int, default=None, help="[default: runtime's default]")
    ap.add_argument("--timeout", type=float, default=300, help="longest a burst worker may run, s")
    ap.add_argument("--keep-keys", action="store_true", help="do not delete the scenario keys afterwards")
    ap.add_argument("--out", help="JSON path [default bench/results/throughput-<timestamp>.json]")
    args = ap.parse_args()
    if args.quick:
        for k in ("n_enqueue", "n_drain", "n_io", "n_latency"):
            setattr(args, k, max(20, getattr(args, k) // 20))
    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = set(scenarios) - set(ALL)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {ALL}")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = Path(args.out) if args.out else HERE / "results" / f"throughput-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    server: RedisServer | None = None
    result: dict[str, Any] = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
                                       "cpus": os.cpu_count(), "python": sys.version.split()[0],
                                       "redis_version": None, "own_server": False},
                              "scenarios": {}}
    try:
        if args.redis:
            url = args.redis
        else:
            binary = args.redis_server
            if not binary:
                try:
                    from runtime.broker.embedded import redis_server_binary
                    binary = redis_server_binary()
                except Exception:  # noqa: BLE001
                    binary = shutil.which("redis-server")
            if not binary:
                print("error: no redis-server found; give --redis-server PATH or --redis URL", file=sys.stderr)
                return 2
            server = RedisServer(binary, workdir)
            server.start()
            url = server.url
        try:
            info = redis.Redis.from_url(url, socket_connect_timeout=5).info("server")
        except (redis.RedisError, OSError) as exc:
            print(f"error: cannot reach Redis at {url}: {exc}", file=sys.stderr)
            return 2
        result["meta"] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
            "runtime_file": sys.modules["runtime.client"].__file__,
            "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(), "redis_url": url, "own_server": server is not None,
            "redis_server_binary": server.binary if server else None,
            "redis_version": info.get("redis_version"), "args": vars(args), "logs": str(workdir),
        }
        bench = Bench(args, url, workdir)
        nmap = {"enqueue": args.n_enqueue, "drain": args.n_drain, "io": args.n_io, "latency": args.n_latency,
                "capped": args.n_drain}
        for scn in scenarios:
            t = time.time()
            print(f"[{time.strftime('%H:%M:%S')}] {scn} (N={nmap[scn]:,}) ...", file=sys.stderr, flush=True)
            try:
                r = getattr(bench, "s_" + scn)(nmap[scn])
                r["ok"] = True
            except Exception as exc:  # noqa: BLE001 - report, go on with the next scenario
                r = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                for p in bench.prefixes:
                    if scn in p:
                        bench.cleanup(p)
            r["scenario_wall_s"] = time.time() - t
            result["scenarios"][scn] = r
            print(f"    {'ok' if r['ok'] else 'FAILED: ' + r['error'][:300]} ({r['scenario_wall_s']:.1f} s)",
                  file=sys.stderr, flush=True)
        result["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    finally:
        if server is not None:
            server.stop()
    text = report(result)
    print(text)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {out_path}; worker logs in {workdir}", file=sys.stderr)
    return 0 if all(v.get("ok") for v in result["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
