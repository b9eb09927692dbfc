"""Two targets of issue 19, run by bench/mongo_queries.py (``--examples N``, ``--bulk N``):

- the ten example queries of docs/mongodb.md over N job documents (5,000): each one's
  median and p95 time, the declared index its shape uses, and, on a real MongoDB, whether
  explain() shows an index scan;
- ``queue_jobs`` of N jobs (2,000): the time until ``runtime jobs -n N`` (a whole
  command) lists every one, and until MongoDB itself holds them all.

The N documents are made by runtime's own ``document()`` from jobs of a few tasks spread
over the last seven days (successes, failures of three exception types, retries,
running and waiting jobs, params, logs, eight workers) and inserted in batches.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["tasks_example.work.fail", "tasks_example.work.io_wait", "tasks_example.files.analyse_source",
         "tasks_example.work.noop", "tasks_example.work.flaky", "tasks_example.work.steps"]
WORKERS = [f"host-{i}.{1000 + i}.ab{i}" for i in range(8)]
EXCEPTIONS = ["ValueError", "ConnectionError", "TimeoutError"]


def synthetic_jobs(n: int, seed: int = 19) -> list[Any]:
    """``n`` Jobs as a few weeks of a busy deployment would leave them."""
    from runtime.job import Job
    from runtime.status import Status
    rnd = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        path = TASKS[i % len(TASKS)]
        status = rnd.choices(["success", "failed", "retry", "started", "queued", "cancel"], [70, 15, 3, 3, 6, 3])[0]
        end = now - (rnd.uniform(0, 3600) if i % 10 == 0 else rnd.uniform(0, 7 * 86400))  # a busy last hour
        run = rnd.expovariate(1 / 0.4)
        start = end - run
        queued = start - rnd.expovariate(1 / 2.0)
        params: dict[str, Any] = {"seconds": round(run, 3)} if "io_wait" in path else (
            {"path": "/etc/hostname" if i % 97 == 0 else f"/srv/app/m{i % 50}.py"} if "analyse" in path else {})
        history = [{"at": queued, "status": "queued"}]
        if status != "queued":
            history.append({"at": start, "status": "started", "worker": WORKERS[i % 8], "attempt": 1})
        if status not in ("queued", "started"):
            history.append({"at": end, "status": status})
        failed = status in ("failed", "retry")
        out.append(Job(f"{int(queued * 1000):012x}{i:012x}", path, params, "default", 0, Status(status),
                       queued_at=queued, due_at=queued, started_at=start if status != "queued" else None,
                       ended_at=end if len(history) == 3 else None,
                       worker=WORKERS[i % 8] if status != "queued" else None, attempt=int(status != "queued"),
                       exc_type=EXCEPTIONS[i % 3] if failed else None, exc_message="boom" if failed else None,
                       logs=[f"step {k}" for k in range(3)], history=history,
                       report={"timing": {"wait_s": round(start - queued, 6), "wall_s": round(run, 6)}}))
    return out


def fill(store: Any, settings: Any, n: int) -> float:
    """Insert ``n`` synthetic documents; returns the seconds it took."""
    from runtime.store.mongo.documents import document
    docs = [document(job, len(job.history), settings) for job in synthetic_jobs(n)]
    t = time.perf_counter()
    for i in range(0, len(docs), 200):
        store.jobs.insert_many(docs[i:i + 200], ordered=False)
    store.ensure_indexes()
    return time.perf_counter() - t


def time_examples(store: Any, repeat: int) -> bool:
    """Print the table of the ten examples; True when each uses its declared index."""
    from mongo_examples import examples, explain_uses_an_index, index_for, run
    raw = store.jobs
    some = raw.find_one({"status": "success", "logs": {"$ne": []}})
    names = {"now": datetime.now(UTC), "job_id": some["_id"], "worker_id": WORKERS[0]}
    print(f"\n| example of docs/mongodb.md ({raw.count_documents({})} documents, {repeat} runs) | answer | "
          f"median ms | p95 ms | declared index | index by shape | explain |")
    print("|---|---:|---:|---:|---|---|---|")
    ok = True
    for ex in examples():
        times, answer, shapes = [], None, []
        for _ in range(repeat + 1):
            t = time.perf_counter()
            answer, shapes = run(ex, raw, names)
            times.append((time.perf_counter() - t) * 1000)
        times = sorted(times[1:])
        by_shape = {index_for(s) for s in shapes}
        explained = {explain_uses_an_index(raw, s) for s in shapes}
        ok = ok and by_shape == {ex.index} and False not in explained
        size = len(answer) if isinstance(answer, list) else 1
        verdict = "n/a (mongoeco)" if explained == {None} else ("index scan" if explained == {True} else "COLLSCAN")
        print(f"| {ex.number}. {ex.title} | {size} | {statistics.median(times):.1f} | "
              f"{times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]:.1f} | {ex.index} | "
              f"{', '.join(sorted(str(b) for b in by_shape))} | {verdict} |")
    return ok


def time_bulk(client: Any, n: int, redis_url: str, mongo_url: str, db: str) -> float:
    """``queue_jobs`` of ``n`` jobs, then ``runtime jobs -n N --json`` until it lists them
    all; prints the figures and returns the seconds to the complete listing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), "RUNTIME_REDIS_URL": redis_url,
                "RUNTIME_KEY_PREFIX": client.settings.key_prefix, "RUNTIME_MONGODB_DATABASE": db})
    client.reader.jobs()  # the ownership check, as any producer's first call
    t = time.perf_counter()
    ids = set(client.queue_jobs("tasks_example.work.noop", [{}] * n, delay=3600))
    queued = time.perf_counter() - t
    while True:
        out = subprocess.run([sys.executable, "-m", "runtime", "--mongodb", mongo_url, "jobs", "-n", str(n), "--json"],
                             env=env, capture_output=True, text=True, timeout=120)
        page = json.loads(out.stdout or "{}")  # a Page (docs/json.md): its "jobs"
        listed = {j["id"] for j in page.get("jobs") or ()}
        if ids <= listed:
            break
    readable = time.perf_counter() - t
    in_mongo = client.store.jobs.count_documents({"_id": {"$in": list(ids)}})
    t2 = time.perf_counter()
    client.mongo.copy_pending()  # what a worker's reap does about every second
    drained = time.perf_counter() - t2
    print(f"\nqueue_jobs of {n}: {queued:.2f} s; every job listed by `runtime jobs -n {n}` (a whole command) "
          f"{readable:.2f} s after the call began (target 2 s: {'yes' if readable < 2 else 'NO'}); "
          f"{in_mongo} documents were in MongoDB then, the rest handed over and read from Redis; "
          f"copying the hand-over took {drained:.1f} s more")
    return readable


def stop(procs: list[subprocess.Popen[Any]]) -> None:
    """Stop the servers a bench started, by pid (SIGTERM, then SIGKILL after 10 s)."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
