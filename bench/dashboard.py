"""Server time of the dashboard's pages with many jobs stored in Redis (issue 17's targets:
the jobs list with any single filter, the failure groups and a job page each under 100 ms,
median of 20; the dashboard process under 150 MB RSS).

Starts a redis-server of its own (unix socket, temporary folder), queues JOBS jobs of
``tasks_example.work.noop`` through the client (real documents and indexes), runs RUN of
them (RUN / 10 of ``tasks_example.work.fail``, the rest noop, on queue ``ran``) with a
burst worker so that there are finished and failed jobs, starts ``runtime dashboard``, and
times each page over HTTP from this process (so the figures include the loopback round
trip): RUNS requests each, median and fastest, in ms. Then the dashboard's RSS, and the
Redis commands it sends with no page open.

With ``--drain N``: ten open pages of a running job (threads polling its JSON twin once a
second, as app.js does) against a worker's drain, measured two ways. Directly: the Redis
commands, command time (INFO commandstats) and Redis CPU (INFO cpu) per second the pages
add over the same time with none open, against what a drain of N noop jobs spends per
second of it. And end to end: the drain rate of one burst worker process (100 greenlets,
as bench/throughput.py's drain) with and without the pages, alternated A B B A ...
``--reps`` times each, medians and paired changes. The worker runs on CPU 0, Redis, the
dashboard and the pages on CPU 1 (taskset), so the pages reach the drain only through
Redis. Stops every process it started by pid.

    python bench/dashboard.py [--jobs 1000000] [--run 20000] [--runs 20] [--drain 5000 --reps 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

PAGES = [
    ("overview", "/"),
    ("jobs", "/jobs"),
    ("jobs status=failed", "/jobs?status=failed"),
    ("jobs status=queued p2", None),  # the second page, by the first page's cursor
    ("jobs queue=ran", "/jobs?queue=ran"),
    ("jobs path=work.fail", "/jobs?path=tasks_example.work.fail"),
    ("jobs exc=ValueError", "/jobs?exc=ValueError"),
    ("jobs since=10m", "/jobs?since=10m"),
    ("jobs params text", "/jobs?q=boom"),
    ("jobs by end", "/jobs?sort=ended"),
    ("jobs queued by queue time", "/jobs?status=queued&sort=queued"),
    ("jobs by duration (window)", "/jobs?sort=run"),
    ("jobs failed by duration", "/jobs?status=failed&sort=run"),
    ("failures", "/failures"),
    ("job page", "/jobs/{failed}"),
    ("job live poll", "/api/jobs/{failed}"),
    ("queues", "/queues"),
    ("workers", "/workers"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[float, str]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read().decode()
    return time.perf_counter() - t, body


def load(env: dict[str, str], jobs: int, run: int, home: Path) -> None:
    code = (f"from runtime import Client\n"
            f"c = Client()\n"
            f"for i in range(0, {jobs}, 100_000):\n"
            f"    c.queue_jobs('tasks_example.work.noop', [{{'n': j}} for j in range(i, min(i + 100_000, {jobs}))],"
            f" check=False)\n"
            f"c.queue_jobs('tasks_example.work.fail', [{{'message': 'boom'}}] * {run // 10}, queue='ran')\n"
            f"c.queue_jobs('tasks_example.work.noop', [{{}}] * {run - run // 10}, queue='ran')\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=home, check=True)
    print(f"queued {jobs + run:,} jobs in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runtime", "worker", "--burst", "--queues", "ran", "--greenlets", "50",
                    "--log-level", "ERROR"], env=env, cwd=home, check=True)
    print(f"ran {run:,} of them in {time.perf_counter() - t:.0f} s")


def idle_cost(sock: Path, seconds: float = 5.0) -> None:
    """Commands Redis processed while the dashboard ran with no page open (its own INFO
    calls taken out): what an idle dashboard costs."""
    import redis
    r = redis.Redis(unix_socket_path=str(sock))
    before = int(r.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(r.info("stats")["total_commands_processed"])
    print(f"Redis commands from an idle dashboard (no page open) over {seconds:g} s: {after - before - 1}")


#: Pin processes to CPUs (``--no-pin``: leave them to the scheduler).
PINNING = True


def commands_per_request(sock: Path, url: str, n: int = 20) -> float:
    """Redis commands one request of ``url`` costs (the mean of ``n``; INFO's own taken out)."""
    import redis
    r = redis.Redis(unix_socket_path=str(sock))
    before = int(r.info("stats")["total_commands_processed"])
    for _ in range(n):
        get(url)
    return (int(r.info("stats")["total_commands_processed"]) - before - 1) / n


def pin(pid: int, cpu: int) -> None:
    """Keep process ``pid`` on CPU ``cpu`` (when the machine has two or more)."""
    if PINNING and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})


def worker_cmd(queue: str) -> list[str]:
    """``runtime worker --burst`` of ``queue`` with 100 greenlets (bench/throughput.py's
    drain), on CPU 0 (taskset) while Redis, the dashboard and the pages keep to CPU 1."""
    cmd = [sys.executable, "-m", "runtime", "worker", "--burst", "--queues", queue, "--greenlets", "100",
           "--log-level", "ERROR"]
    return (["taskset", "-c", "0"] if PINNING and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else []) + cmd


def redis_cost(r: Any) -> tuple[float, int, float]:
    """(Redis CPU seconds used so far, user + sys; commands processed; microseconds spent
    in commands, from INFO commandstats)."""
    cpu, stats = r.info("cpu"), r.info("commandstats")
    return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), sum(int(v["calls"]) for v in stats.values()),
            float(sum(int(v["usec"]) for v in stats.values())))


def drain_rate(env: dict[str, str], home: Path, n: int, r: Any) -> tuple[float, tuple[float, ...]]:
    """One burst worker process (100 greenlets, bench/throughput.py's drain) draining ``n``
    noop jobs of queue ``drain``: (jobs/s = (n - 1) / (last ended_at - first started_at)
    from the documents, the Redis cost per second of that drain: (CPU s, commands,
    command µs) over the drain's seconds)."""
    from runtime.client import Client
    from runtime.settings import load_settings
    c = Client(load_settings({"redis_url": env["RUNTIME_REDIS_URL"], "key_prefix": env["RUNTIME_KEY_PREFIX"]},
                             env={}), import_tasks=False)
    ids = c.queue_jobs("tasks_example.work.noop", [{}] * n, queue="drain", check=False)
    before = redis_cost(r)
    subprocess.run(worker_cmd("drain"), env=env, cwd=home, check=True)
    after = redis_cost(r)
    jobs = [j for j in c.live.get_many(ids, history=False) if j is not None]
    first = min(j.started_at or 0.0 for j in jobs)
    last = max(j.ended_at or 0.0 for j in jobs)
    c.redis.delete(*[c.broker.keys.job(i) for i in ids])
    for s in ("success", "failed"):
        c.redis.zrem(c.broker.keys.status("drain", s), *ids)
    return (len(jobs) - 1) / (last - first), tuple((a - b) / (last - first) for a, b in zip(after, before))


def bootstrap_ci(values: list[float], rounds: int = 5000, seed: int = 17) -> tuple[float, float]:
    """The 95 % bootstrap interval of the median of ``values``."""
    import random
    rnd = random.Random(seed)
    medians = sorted(statistics.median(rnd.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


class Pages:
    """``count`` open pages of a running job, each polling its JSON twin once a second as
    app.js does, in threads of this process (pinned with Redis and the dashboard)."""

    def __init__(self, url: str, count: int = 10) -> None:
        self.url, self.count = url, count
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.polls = 0

    def __enter__(self) -> Pages:
        def poll() -> None:
            while not self.stop.wait(1.0):
                get(self.url)
                self.polls += 1
        self.threads = [threading.Thread(target=poll, daemon=True) for _ in range(self.count)]
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 10
        while self.polls < self.count and time.monotonic() < deadline:  # every page has polled once
            self.stop.wait(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def page_cost(r: Any, url: str, dash_pid: int, seconds: float = 10.0) -> dict[str, float]:
    """What ten open pages cost per second: Redis CPU s, commands and command µs (over the
    same time with no page open taken out), and the dashboard process's CPU s."""
    dash = psutil.Process(dash_pid)

    def window(pages: bool) -> tuple[float, ...]:
        ctx = Pages(url) if pages else None
        if ctx:
            ctx.__enter__()
        r0, d0, t0 = redis_cost(r), sum(dash.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        r1, d1, t1 = redis_cost(r), sum(dash.cpu_times()[:2]), time.monotonic()
        if ctx:
            ctx.__exit__()
        return (*((b - a) / (t1 - t0) for a, b in zip(r0, r1)), (d1 - d0) / (t1 - t0))
    idle, busy = window(False), window(True)
    return {k: b - a for k, a, b in zip(("cpu_s", "commands", "usec", "dash_cpu_s"), idle, busy)}


def drain_with_pages(env: dict[str, str], home: Path, base: str, n: int, reps: int, sock: Path,
                     dash_pid: int) -> None:
    """Ten open pages of a running job against a worker's drain: what they cost Redis per
    second against what a drain spends per second (INFO commandstats and cpu), then the
    drain rate with and without them, alternated (A B B A ...) ``reps`` times each, medians."""
    import redis
    r = redis.Redis(unix_socket_path=str(sock))
    slow = subprocess.Popen([sys.executable, "-m", "runtime", "worker", "--queues", "slow", "--log-level", "ERROR"],
                            env=env, cwd=home)
    pin(slow.pid, 1)
    try:
        code = ("from runtime import Client; print(Client().queue_job('tasks_example.work.io_wait', "
                "{'seconds': 3600}, queue='slow', check=False))")
        job_id = subprocess.run([sys.executable, "-c", code], env=env, cwd=home, check=True, capture_output=True,
                                text=True).stdout.strip()
        while '"status": "started"' not in get(f"{base}/api/jobs/{job_id}")[1].replace('":"', '": "'):
            time.sleep(0.1)
        url = f"{base}/api/jobs/{job_id}"
        cost = page_cost(r, url, dash_pid)
        print(f"ten open pages of a running job, per second: {cost['commands']:.1f} Redis commands, "
              f"{cost['usec'] / 1000:.2f} ms in commands (commandstats), {cost['cpu_s'] * 1000:.2f} ms Redis CPU "
              f"(INFO cpu, noisy at this size); the dashboard process {cost['dash_cpu_s'] * 1000:.1f} ms CPU")
        drain_rate(env, home, n, r)  # warm-up, not counted
        rates: dict[str, list[float]] = {"no page open": [], "ten job pages open": []}
        spend: list[tuple[float, ...]] = []
        for i in range(reps):
            for pages in ((False, True) if i % 2 == 0 else (True, False)):
                with Pages(url) if pages else contextlib.nullcontext():
                    rate, per_s = drain_rate(env, home, n, r)
                rates["ten job pages open" if pages else "no page open"].append(rate)
                if not pages:
                    spend.append(per_s)
        drain = [statistics.median(x) for x in zip(*spend)]
        print(f"a drain, per second of it: {drain[1]:,.0f} Redis commands, {drain[2] / 1000:.0f} ms in commands, "
              f"{drain[0] * 1000:.0f} ms Redis CPU")
        print(f"ten open pages add {100 * cost['commands'] / drain[1]:.3f} % of a drain's Redis commands per second, "
              f"{100 * cost['usec'] / drain[2]:.3f} % of its command time, {100 * cost['cpu_s'] / drain[0]:.2f} % of "
              f"its Redis CPU")
        for name, got in rates.items():
            q = statistics.quantiles(got, n=4) if len(got) > 1 else [got[0]] * 3
            print(f"drain of {n:,} noop jobs, {name}: median {statistics.median(got):,.0f} jobs/s "
                  f"(quartiles {q[0]:,.0f}-{q[2]:,.0f}, {len(got)} runs)")
        a, b = rates["no page open"], rates["ten job pages open"]
        ratios = sorted(y / x - 1 for x, y in zip(a, b))
        low, high = bootstrap_ci(ratios)
        print(f"paired (A then B, or B then A): median change with pages {100 * statistics.median(ratios):+.1f} % "
              f"(95 % bootstrap interval {100 * low:+.1f} % to {100 * high:+.1f} %; runs from "
              f"{100 * ratios[0]:+.1f} % to {100 * ratios[-1]:+.1f} %)")
    finally:
        slow.terminate()  # a second signal: no grace period for the hour-long job
        time.sleep(0.5)
        slow.terminate()
        try:
            slow.wait(30)
        except subprocess.TimeoutExpired:
            slow.kill()
            slow.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--run", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--drain", type=int, default=0, help="also: drain rate of this many jobs, with and without "
                                                        "ten open job pages (0: skip)")
    ap.add_argument("--reps", type=int, default=15, help="drain runs of each kind, alternated")
    ap.add_argument("--no-pin", action="store_true", help="leave the processes to the scheduler (no taskset)")
    args = ap.parse_args()
    global PINNING
    PINNING = not args.no_pin
    home = Path(tempfile.mkdtemp(prefix="rt-dash-bench-"))
    sock = home / "redis.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                              "--appendonly", "no", "--dir", str(home)], stdout=subprocess.DEVNULL)
    pin(redis.pid, 1)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")},
           "RUNTIME_REDIS_URL": f"unix://{sock}", "RUNTIME_KEY_PREFIX": "bench"}
    dash = None
    try:
        while not sock.exists():
            time.sleep(0.05)
        load(env, args.jobs, args.run, home)
        port = free_port()
        dash = subprocess.Popen([sys.executable, "-m", "runtime", "dashboard", "--port", str(port)], env=env,
                                cwd=home, stdout=subprocess.DEVNULL)
        pin(dash.pid, 1)
        pin(os.getpid(), 1)  # the pages' polls
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                get(base + "/static/app.js")
                break
            except OSError:
                time.sleep(0.1)
        _, page = get(base + "/jobs?status=failed&limit=1")
        failed = page.split('href="/jobs/', 2)[1].split('"', 1)[0] if 'href="/jobs/' in page else "none"
        _, first = get(base + "/jobs?status=queued")
        cursor = first.split('id="next" href="/jobs?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        print(f"example failed job: {failed}")
        print(f"{'page':24} {'median ms':>10} {'min ms':>8}")
        for name, path in PAGES:
            url = base + (path.format(failed=failed) if path else "/jobs?" + cursor)
            times = [get(url)[0] for _ in range(args.runs)]
            print(f"{name:24} {statistics.median(times) * 1000:10.1f} {min(times) * 1000:8.1f}")
        rss = psutil.Process(dash.pid).memory_info().rss
        print(f"dashboard RSS after the runs: {rss / 2**20:.0f} MiB")
        idle_cost(sock)
        for name, path in (("a job page's live poll", f"/api/jobs/{failed}"), ("the overview's live poll (every 2 s)",
                                                                                "/api/overview")):
            print(f"Redis commands per request of {name}: {commands_per_request(sock, base + path):.1f}")
        if args.drain:
            drain_with_pages(env, home, base, args.drain, args.reps, sock, dash.pid)
    finally:
        for p in (dash, redis):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
