"""Server time of the dashboard's pages with many jobs stored in Redis (issue 17's targets:
the jobs list with any single filter, the failure groups and a job page each under 100 ms,
median of 20; the dashboard process under 150 MB RSS).

Starts a redis-server of its own (unix socket, temporary folder), queues JOBS jobs of
``tasks_example.work.noop`` through the client (real documents and indexes), runs RUN of
them (RUN / 10 of ``tasks_example.work.fail``, the rest noop, on queue ``ran``) with a
burst worker so that there are finished and failed jobs, starts ``runtime dashboard``, and
times each page over HTTP from this process (so the figures include the loopback round
trip): RUNS requests each, median and fastest, in ms. Then the dashboard's RSS, and the
Redis commands it sends with no page open. With ``--drain N``: a burst worker's drain rate
of N noop jobs with no page open and with ten open pages of a running job polling, in
turn, ``--reps`` times each. Stops every process it started by pid.

    python bench/dashboard.py [--jobs 1000000] [--run 20000] [--runs 20] [--drain 20000 --reps 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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


def drain_rate(env: dict[str, str], home: Path, n: int) -> float:
    """Jobs/s of one burst worker process (100 greenlets) draining ``n`` noop jobs from
    queue ``drain``: (n - 1) / (last ended_at - first started_at), from the documents."""
    from runtime.client import Client
    from runtime.settings import load_settings
    c = Client(load_settings({"redis_url": env["RUNTIME_REDIS_URL"], "key_prefix": env["RUNTIME_KEY_PREFIX"]},
                             env={}), import_tasks=False)
    ids = c.queue_jobs("tasks_example.work.noop", [{}] * n, queue="drain", check=False)
    subprocess.run([sys.executable, "-m", "runtime", "worker", "--burst", "--queues", "drain", "--greenlets", "100",
                    "--log-level", "ERROR"], env=env, cwd=home, check=True)
    jobs = [j for j in c.live.get_many(ids, history=False) if j is not None]
    first = min(j.started_at or 0.0 for j in jobs)
    last = max(j.ended_at or 0.0 for j in jobs)
    return (len(jobs) - 1) / (last - first)


def pollers(url: str, count: int, stop: Any) -> list[Any]:
    """``count`` threads polling ``url`` once a second until ``stop`` is set: open pages of
    a running job, as app.js polls them."""
    import threading

    def poll() -> None:
        while not stop.wait(1.0):
            get(url)
    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def drain_with_pages(env: dict[str, str], home: Path, base: str, n: int, reps: int) -> None:
    """The drain rate with no page open and with ten open pages of a running job, in turn."""
    import threading
    slow = subprocess.Popen([sys.executable, "-m", "runtime", "worker", "--queues", "slow", "--log-level", "ERROR"],
                            env=env, cwd=home)
    try:
        code = ("from runtime import Client; print(Client().queue_job('tasks_example.work.io_wait', "
                "{'seconds': 3600}, queue='slow', check=False))")
        job_id = subprocess.run([sys.executable, "-c", code], env=env, cwd=home, check=True, capture_output=True,
                                text=True).stdout.strip()
        while '"status": "started"' not in get(f"{base}/api/jobs/{job_id}")[1].replace('":"', '": "'):
            time.sleep(0.1)
        rates: dict[str, list[float]] = {"no page open": [], "ten job pages open": []}
        for _ in range(reps):
            rates["no page open"].append(drain_rate(env, home, n))
            stop = threading.Event()
            threads = pollers(f"{base}/api/jobs/{job_id}", 10, stop)
            rates["ten job pages open"].append(drain_rate(env, home, n))
            stop.set()
            for t in threads:
                t.join()
        for name, got in rates.items():
            print(f"drain of {n:,} noop jobs, {name}: median {statistics.median(got):,.0f} jobs/s "
                  f"({', '.join(f'{r:,.0f}' for r in got)})")
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
    ap.add_argument("--reps", type=int, default=3, help="drain runs of each kind")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rt-dash-bench-"))
    sock = home / "redis.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                              "--appendonly", "no", "--dir", str(home)], stdout=subprocess.DEVNULL)
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
        if args.drain:
            drain_with_pages(env, home, base, args.drain, args.reps)
    finally:
        for p in (dash, redis):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
