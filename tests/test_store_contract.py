"""The job store contract: the same tests run against every JobStore implementation.

Add an implementation to STORES (and its fixture) and it must pass them all.
"""

from __future__ import annotations

import pytest

from runtime.errors import JobNotFound
from runtime.status import Status
from runtime.store import RedisJobStore

STORES = ["redis"]


@pytest.fixture(params=STORES)
def store(request, client):
    if request.param == "redis":
        return RedisJobStore(client.redis, client.settings.key_prefix)
    raise AssertionError(request.param)


def test_get_returns_the_document_with_history(store, client):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="q1", priority=3)
    job = store.get(job_id)
    assert (job.id, job.path, job.params, job.queue, job.priority, job.status) == \
        (job_id, "testtasks.add", {"a": 1, "b": 2}, "q1", 3, Status.QUEUED)
    assert job.queued_at and job.history[0]["status"] == "queued"


def test_get_unknown_raises_and_get_many_keeps_order_with_none(store, client):
    with pytest.raises(JobNotFound):
        store.get("nope")
    a = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    b = client.queue_job("testtasks.add", {"a": 3, "b": 4})
    got = store.get_many([b, "nope", a])
    assert [j and j.id for j in got] == [b, None, a]


def test_list_filters_by_status_queue_and_path_newest_first(store, client):
    q1 = [client.queue_job("testtasks.add", {"a": i, "b": 0}, queue="q1") for i in range(3)]
    q2 = [client.queue_job("testtasks.sleep", {"seconds": 0}, queue="q2") for _ in range(2)]
    client.cancel(q1[0])
    assert [j.id for j in store.list_jobs(queue="q1", status="queued")] == [q1[2], q1[1]]
    assert [j.id for j in store.list_jobs(path="testtasks.sleep")] == q2[::-1]
    assert [j.id for j in store.list_jobs(status="cancel")] == [q1[0]]
    assert len(store.list_jobs(limit=2)) == 2


def test_counts_by_status(store, client):
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 4)
    client.cancel(ids[0])
    counts = store.counts()
    assert counts["queued"] == 3 and counts["cancel"] == 1 and set(counts) == {s.value for s in Status}
