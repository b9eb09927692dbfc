"""The read API under the CLI and the dashboard: a job with its attempts, workers with
their supervisors, events, queues (pages of jobs: tests/store/test_store_contract.py)."""

from __future__ import annotations

import json
import time

import pytest

from runtime.broker.registry import EVENT_KEYS

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_a_job_reads_with_its_attempts(client, worker):
    job_id = client.queue_job("tasks_example.work.flaky", {"fail_times": 1})
    worker.burst()
    client.requeue(job_id)
    w = worker.burst()
    view = client.reader.job(job_id)
    assert view.job.status == "success" and view.job.attempt == 3
    got = [(a.number, a.status, a.worker) for a in view.attempts]
    assert got[0][:2] == (1, "retry") and got[1][:2] == (2, "success") and got[2] == (3, "success", w.id)
    assert all(a.ended_at >= a.started_at for a in view.attempts)
    assert view.attempts[0].note.startswith("retry 1/")
    # an attempt starts when it began running (its history's started entry), not at its claim
    starts = [h["at"] for h in view.job.history if h["status"] == "started"]
    claims = [h["at"] for h in view.job.history if h["status"] == "claimed"]
    assert [a.started_at for a in view.attempts] == starts and all(c <= s for c, s in zip(claims, starts))


def test_workers_come_under_their_supervisor_with_numbers_and_times(client):
    registry, now = client.broker.registry, time.time()
    registry.write_entry("h.1.s1", {"id": "h.1.s1", "kind": "supervisor", "host": "h", "pid": "1", "processes": "2",
                                    "started_at": repr(now), "children": json.dumps([{"pid": 2}]), "running": "[]"})
    registry.write_entry("h.2.a", {"id": "h.2.a", "host": "h", "pid": "2", "supervisor": "h.1.s1", "greenlets": "4",
                                   "started_at": repr(now), "jobs_done": "7", "running": json.dumps(
                                       [{"id": "j1", "path": "p", "started_at": now, "run": True, "stack": []}])})
    registry.write_entry("a.9.z", {"id": "a.9.z", "host": "a", "pid": "9", "started_at": repr(now), "running": "[]"})
    entries = client.reader.workers()
    assert [e["id"] for e in entries] == ["h.1.s1", "h.2.a", "a.9.z"]  # tree first, then the unsupervised
    sup, child, alone = entries
    assert sup["children"] == [{"pid": 2}] and sup["processes"] == 2
    assert child["jobs_done"] == 7 and child["running"][0]["started_at"].endswith("Z")
    assert alone["started_at"].endswith("Z") and "pid_started" not in alone


def test_events_newest_first_with_iso_times(client):
    for n in range(3):
        client.broker.registry.record_event({"event": "recycle", "at": 1_700_000_000.0 + n, "detail": str(n)})
    events = client.reader.events(limit=2)
    assert [e["detail"] for e in events] == ["2", "1"] and events[0]["at"] == "2023-11-14T22:13:22.000000Z"
    assert all(set(e) == set(EVENT_KEYS) for e in events)  # one shape: None for what does not apply


def test_queues_hold_depths_and_counts(client):
    first = client.get_job(client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="q1"))
    client.queue_job("testtasks.add", {"a": 2, "b": 1}, queue="q1")
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="q1", delay=60)
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="q2", delay=60)
    data = client.reader.queues()
    # the oldest waiting job's due time, to the millisecond the queue's score keeps
    assert data["queues"]["q1"] == {"ready": 2, "delayed": 1, "paused": False,
                                    "oldest_due_at": pytest.approx(first.due_at, abs=0.001)}
    assert data["queues"]["q2"]["oldest_due_at"] is None and data["counts"]["queued"] == 4
