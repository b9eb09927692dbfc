#!/usr/bin/env python3
"""Server time of the dashboard's pages over the MongoDB job store (issue 17's target: the
jobs list with any single filter, the failure groups and a job page each under 100 ms,
median of 20, on the test MongoDB server with at most 10,000 jobs: its writes cost
O(collection size); tests/dashboard/test_mongo_pages.py checks that every query the pages
make has a declared index, so the figures hold on a real MongoDB at any size).

Starts a redis-server (unix socket) and mongoeco's wire server (tests/mongo_server.py),
fills JOBS documents made by runtime's own ``document()`` (bench/mongo_targets.py: a few
weeks of a busy deployment: successes, failures of three exception types, retries,
running and waiting jobs, eight workers), starts ``runtime dashboard`` on them and times
each page over HTTP from this process, RUNS requests each: median and fastest, in ms.
Stops both servers and the dashboard by pid; the database is dropped.

    python bench/dashboard_mongo.py [--jobs 10000] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

PAGES = [
    ("overview", "/"),
    ("jobs", "/jobs"),
    ("jobs status=failed", "/jobs?status=failed"),
    ("jobs queue=default", "/jobs?queue=default"),
    ("jobs path=work.fail", "/jobs?path=tasks_example.work.fail"),
    ("jobs worker", "/jobs?worker=host-3.1003.ab3"),
    ("jobs exc=ValueError", "/jobs?exc=ValueError"),
    ("jobs since=1h", "/jobs?since=1h"),
    ("jobs params text", "/jobs?q=hostname"),
    ("jobs sorted by duration", "/jobs?sort=run"),
    ("jobs failed by end", "/jobs?status=failed&sort=ended"),
    ("jobs by queue time", "/jobs?sort=queued"),
    ("failures", "/failures"),
    ("job page", "/jobs/{failed}"),
    ("job live poll", "/api/jobs/{failed}"),
    ("queues", "/queues"),
    ("workers", "/workers"),
]


def fill(client: Any, n: int) -> float:
    """Insert ``n`` documents of bench/mongo_targets.py's synthetic jobs, 100 a batch, then
    create the indexes; the seconds it took."""
    from mongo_targets import synthetic_jobs

    from runtime.store.mongo.documents import document
    docs = [document(job, len(job.history), client.settings) for job in synthetic_jobs(n)]
    t = time.perf_counter()
    for i in range(0, len(docs), 100):
        client.store.jobs.insert_many(docs[i:i + 100], ordered=False)
    client.store.ensure_indexes()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    import mongo_server
    from dashboard import free_port, get
    from mongo_queries import start_redis

    from runtime.client import Client
    from runtime.settings import load_settings
    procs: list[Any] = []
    client = None
    try:
        p, redis_url = start_redis()
        procs.append(p)
        p, mongo_url = mongo_server.start()
        procs.append(p)
        prefix, db = "bench" + uuid.uuid4().hex[:6], "rt_bench_" + uuid.uuid4().hex[:6]
        conf = {"redis_url": redis_url, "key_prefix": prefix, "mongodb_url": mongo_url, "mongodb_database": db}
        # the test server's writes cost O(collection size): a long timeout to fill it
        client = Client(load_settings({**conf, "mongodb_timeout_s": 600}, env={}), import_tasks=False)
        print(f"filled {args.jobs:,} job documents in {fill(client, args.jobs):.1f} s")
        [failed] = client.store.list_jobs(status="failed", limit=1)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")},
               **{"RUNTIME_" + k.upper(): v for k, v in conf.items()}}
        port = free_port()
        dash = subprocess.Popen([sys.executable, "-m", "runtime", "dashboard", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL)
        procs.append(dash)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                get(base + "/static/app.js")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(f"{'page':26} {'median ms':>10} {'min ms':>8}")
        worst = 0.0
        for name, path in PAGES:
            url = base + path.format(failed=failed.id)
            get(url)  # a first request: connections and caches warm
            times = [get(url)[0] for _ in range(args.runs)]
            worst = max(worst, statistics.median(times))
            print(f"{name:26} {statistics.median(times) * 1000:10.1f} {min(times) * 1000:8.1f}")
        print(f"slowest median: {worst * 1000:.1f} ms (target 100 ms)")
        return 0 if worst < 0.1 else 1
    finally:
        if client is not None:
            try:
                client.store.client.drop_database(client.settings.mongodb_database)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        from mongo_targets import stop
        stop(procs)


if __name__ == "__main__":
    sys.exit(main())
