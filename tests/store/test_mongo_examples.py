"""The ten example queries of docs/mongodb.md, run as written against the test server over
jobs run by a worker and a few older documents, each answering its question with the
index it names (issue 19: "each tested against the test server"); the page's tables of
fields and indexes are the store's own."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from helpers import ROOT, wait_until
from mongo_examples import PAGE, examples, explain_uses_an_index, index_for, run
from mongo_fixtures import in_mongodb, mongo_env

from runtime.client import Client
from runtime.job import Job
from runtime.status import Status
from runtime.store.mongo.documents import INDEXES, document

REAL = [("tasks_example.work.fail", {"message": "bad input"})] * 3 + [
    ("tasks_example.work.io_wait", {"seconds": 0.05}), ("tasks_example.work.io_wait", {"seconds": 0.2}),
    ("tasks_example.files.analyse_source", {"path": "/etc/hostname"}),
    ("tasks_example.files.analyse_source", {"path": str(ROOT / "tasks_example" / "work.py")}),
    ("tasks_example.work.noop", {}), ("mongotasks.log_undecodable", {"name_hex": "ff"})]


def _old(job_id, path, status, ago_s, run_s=None, exc_type=None, settings=None):
    """A document of a job that changed ``ago_s`` seconds ago (written by document())."""
    now = datetime.now(UTC).timestamp()
    end = now - ago_s
    start = end - (run_s or 0.0)
    job = Job(job_id, path, {}, status=Status(status), queued_at=start - 1, due_at=start - 1, started_at=start,
              ended_at=end if status != "started" else None, worker="old-worker.1.aa", attempt=1,
              exc_type=exc_type, exc_message="x" if exc_type else None,
              history=[{"at": start - 1, "status": "queued"}, {"at": start, "status": "started"}]
              + ([{"at": end, "status": status}] if status != "started" else []))
    return document(job, len(job.history), settings)


@pytest.fixture
def history(mongo_settings, worker):
    """Nine jobs run by a worker now, and five older documents; returns (client, real ids,
    worker id, the log job's id)."""
    client = Client(mongo_settings)
    ids = [client.queue_job(path, params) for path, params in REAL]
    w = worker.start(**mongo_env(mongo_settings))
    client.wait(ids, timeout_s=30)
    wait_until(lambda: all(j and j.is_final for j in in_mongodb(client.store, ids)), 15, "the copies")
    assert worker.stop(w) == 0  # its sweep would take the older running documents for jobs Redis lost
    client.store.jobs.insert_many([
        _old("old1", "tasks_example.work.fail", "failed", 2 * 3600, 0.1, "ValueError", mongo_settings),
        _old("old2", "tasks_example.work.flaky", "failed", 3 * 3600, 0.1, "ConnectionError", mongo_settings),
        _old("old3", "tasks_example.work.io_wait", "success", 2 * 86400, 5.0, None, mongo_settings),
        _old("old4", "tasks_example.work.io_wait", "started", 15 * 60, 15 * 60, None, mongo_settings),
        _old("old5", "tasks_example.work.noop", "started", 2 * 60, 2 * 60, None, mongo_settings)])
    client.store.ensure_indexes()
    return client, ids, in_mongodb(client.store, ids)[0].worker, ids[-1]


def _expected(client, ids):
    """Answers of questions 7 and 8 computed here from every document."""
    now = datetime.now(UTC)
    docs = list(client.store.jobs.find({}))
    per_day = Counter((d["ended_at"].strftime("%Y-%m-%d"), d["status"]) for d in docs
                      if d.get("ended_at") and d["ended_at"] >= now - timedelta(days=7))
    times = defaultdict(list)
    for d in docs:
        if d["status"] == "success" and d["ended_at"] >= now - timedelta(days=1):
            times[d["path"]].append(d)
    return per_day, times


def test_the_ten_example_queries_answer_with_the_index_they_name(history):
    client, ids, worker_id, log_job = history
    raw = client.store.jobs
    found = examples()
    assert [e.number for e in found] == list(range(1, 11))
    names = {"now": datetime.now(UTC), "job_id": log_job, "worker_id": worker_id}
    answers = {}
    for example in found:
        answer, shapes = run(example, raw, names)
        answers[example.number] = answer
        assert shapes and {index_for(s) for s in shapes} == {example.index}, (example.number, shapes)
        for shape in shapes:
            assert explain_uses_an_index(raw, shape) in (True, None), (example.number, shape)
    assert sorted(d["_id"] for d in answers[1]) == sorted(ids[:3])
    assert {d["exc_type"] for d in answers[1]} == {"ValueError"}
    assert [(r["_id"], r["jobs"]) for r in answers[2]] == [("ValueError", 4), ("ConnectionError", 1)]
    assert [d["_id"] for d in answers[3]][-1] == "old1" and len(answers[3]) == 4
    assert [d["_id"] for d in answers[4]] == ["old3", ids[4], ids[3], "old4"]
    assert [d["_id"] for d in answers[5]] == [ids[5]] and answers[5][0]["status"] == "success"
    assert answers[6][:3] == ["[stdout] plain line before", "[stdout] opening \\udcff", "[stdout] plain line after"]
    per_day, times = _expected(client, ids)
    assert {(r["_id"]["day"], r["_id"]["status"]): r["jobs"] for r in answers[7]} == per_day
    assert {r["_id"]: r["jobs"] for r in answers[8]} == {p: len(ds) for p, ds in times.items()}
    for r in answers[8]:
        assert r["run_s"] == pytest.approx(sum(d["run_s"] for d in times[r["_id"]]) / len(times[r["_id"]]))
    assert [d["_id"] for d in answers[9]] == ["old4"]
    assert sorted(d["_id"] for d in answers[10]) == sorted(ids)


def test_the_pages_tables_are_the_stores_own(history):
    """Every index of INDEXES is on the page with its keys, and every field a document
    has is described."""
    client, ids, _, _ = history
    text = PAGE.read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)`", text, re.M))
    for name, (keys, opts) in INDEXES.items():
        shown = ", ".join(k + (" -1" if d == -1 else "") for k, d in keys) + (" (TTL)" if "expireAfterSeconds" in opts else "")
        assert rows.get(name, "") + (" (TTL)" if name == "expire_at_ttl" else "") == shown, name
    fields = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", text, re.M))
    described = {f for pair in fields for f in pair if f}
    stored = set().union(*(d.keys() for d in client.store.jobs.find({})))
    assert stored - described == set()
