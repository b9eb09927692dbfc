"""The job store contract: the same tests run against every JobStore implementation.

Each test gets a ``backend``: a client whose reads go to the store under test, and a way
to start real workers writing to it. With MongoDB, reads trail Redis by the copy's
latency (about a round trip), so tests wait for a state with a deadline, never sleep.
Add an implementation to STORES (and to ``backend``) and it must pass them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import Result
from helpers import InProcess, cli, wait_until
from mongo_fixtures import mongo_env

from runtime.client import Client
from runtime.errors import JobNotFound
from runtime.settings import Settings
from runtime.status import Status
from runtime.store import RedisJobStore
from runtime.store.mongo.store import MongoJobStore

STORES = ["redis", "mongo"]
TASKS = "tasks_example,testtasks,mongotasks"


@dataclass
class Backend:
    name: str
    client: Client
    workers: InProcess
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.client.store

    @property
    def settings(self) -> Settings:
        return self.client.settings

    def start_worker(self, *args: str, **settings: Any) -> Any:
        return self.workers.start(*args, **{**self.extra, **settings})

    def cli(self, *args: str) -> Result:
        return cli(self.settings, *args, **self.extra)

    def settled(self, job_id: str, status: str, timeout_s: float = 15.0) -> Any:
        """The stored job once it shows ``status`` (and its worker's copy is done)."""
        return wait_until(lambda: (j := self.store.get(job_id)).status == status and j, timeout_s,
                          f"job {job_id} to be {status} in the {self.name} store")

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


@pytest.fixture(params=STORES)
def backend(request, client, worker) -> Backend:
    if request.param == "redis":
        return Backend("redis", client, worker, {"task_modules": TASKS})
    s = request.getfixturevalue("mongo_settings")
    return Backend("mongo", Client(s), worker, mongo_env(s))


def test_store_type(backend):
    assert isinstance(backend.store, RedisJobStore if backend.name == "redis" else MongoJobStore)


def test_get_returns_the_document_with_history(backend):
    store, client = backend.store, backend.client
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="q1", priority=3)
    job = store.get(job_id)
    assert (job.id, job.path, job.params, job.queue, job.priority, job.status) == \
        (job_id, "testtasks.add", {"a": 1, "b": 2}, "q1", 3, Status.QUEUED)
    assert job.queued_at and job.history[0]["status"] == "queued"


def test_get_unknown_raises_and_get_many_keeps_order_with_none(backend):
    store, client = backend.store, backend.client
    with pytest.raises(JobNotFound):
        store.get("nope")
    a = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    b = client.queue_job("testtasks.add", {"a": 3, "b": 4})
    got = store.get_many([b, "nope", a])
    assert [j and j.id for j in got] == [b, None, a]


def test_list_filters_by_status_queue_and_path_newest_first(backend):
    store, client = backend.store, backend.client
    q1 = [client.queue_job("testtasks.add", {"a": i, "b": 0}, queue="q1") for i in range(3)]
    q2 = [client.queue_job("testtasks.sleep", {"seconds": 0}, queue="q2") for _ in range(2)]
    client.cancel(q1[0])
    assert [j.id for j in store.list_jobs(queue="q1", status="queued")] == [q1[2], q1[1]]
    assert [j.id for j in store.list_jobs(path="testtasks.sleep")] == q2[::-1]
    assert [j.id for j in store.list_jobs(status="cancel")] == [q1[0]]
    assert len(store.list_jobs(limit=2)) == 2


def test_counts_by_status(backend):
    ids = backend.client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 4)
    backend.client.cancel(ids[0])
    counts = backend.store.counts()
    assert counts["queued"] == 3 and counts["cancel"] == 1 and set(counts) == {s.value for s in Status}


def test_a_worker_stores_result_timings_history_and_report(backend):
    job_id = backend.client.queue_job("testtasks.add", {"a": 2, "b": 3})
    backend.start_worker()
    assert backend.client.wait(job_id, timeout_s=15).result == 5
    job = backend.settled(job_id, "success")
    assert job.result == 5 and job.attempt == 1 and job.worker
    assert job.queued_at <= job.started_at <= job.ended_at
    assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "success"]
    claimed, started = job.history[1:3]
    assert claimed["at"] <= started["at"] == job.started_at  # the claim's time, then the run's
    assert claimed["worker"] == started["worker"] == job.worker and claimed["attempt"] == started["attempt"] == 1
    assert job.report["timing"]["wall_s"] >= 0
    assert [j.id for j in backend.store.list_jobs(status="success")] == [job_id]


def test_failure_retry_and_requeue_are_stored(backend):
    client = backend.client
    backend.start_worker()
    bad = client.queue_job("tasks_example.work.fail", {"message": "kaput"})
    flaky = client.queue_job("tasks_example.work.flaky", {"fail_times": 1})
    failed = backend.settled(bad, "failed")
    assert failed.reason == "exception" and "kaput" in failed.exc_message and "ValueError" in failed.traceback
    ok = backend.settled(flaky, "success")
    assert [h["status"] for h in ok.history] == ["queued", "claimed", "started", "retry", "claimed", "started",
                                                 "success"]
    assert backend.store.final_ids("failed") == [bad]
    assert client.requeue_where("failed", path="tasks_example.work.fail") == [bad]
    again = wait_until(lambda: (j := backend.store.get(bad)).attempt == 2 and j.status == "failed" and j, 15,
                       "the requeued job to fail again")
    assert any("requeued from failed" in (h.get("note") or "") for h in again.history)


def test_progress_is_visible_while_running(backend):
    backend.start_worker(progress_interval_s=0.2)
    job_id = backend.client.queue_job("tasks_example.work.steps", {"n": 5, "step_s": 0.1})
    mid = wait_until(lambda: (j := backend.store.get(job_id)).progress and j.progress < 1 and j, 10, "progress")
    assert mid.status == "started" and "steps" in mid.progress_message
    assert backend.settled(job_id, "success").progress == 1.0


def test_cancel_and_a_delayed_job(backend):
    job_id = backend.client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=60)
    job = backend.store.get(job_id)
    assert job.status == "queued" and job.due_at >= job.queued_at + 59
    backend.client.cancel(job_id)
    assert backend.settled(job_id, "cancel").history[-1]["status"] == "cancel"


def test_a_report_over_the_cap_is_cut_with_a_marker(backend):
    backend.start_worker()
    job_id = backend.client.queue_job("mongotasks.big_report", {"kib": 300})
    job = backend.settled(job_id, "success")
    assert "over max_report_bytes" in job.report["big"]["truncated"]
    assert "timing" in job.report


def test_newest_first_over_many_jobs_and_limits(backend):
    ids = backend.client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(120)], queue="many")
    listed = backend.store.list_jobs(queue="many", limit=200)
    assert len(listed) == 120 and {j.id for j in listed} == set(ids)
    changed = [j.queued_at for j in listed]
    assert changed == sorted(changed, reverse=True)
    assert len(backend.store.list_jobs(queue="many", status="queued", limit=7)) == 7


def test_the_cli_reads_the_store(backend):
    job_id = backend.cli("enqueue", "testtasks.add", '{"a": 20, "b": 22}').stdout.strip()
    fails = backend.client.queue_jobs("tasks_example.work.fail", [{}] * 2)
    backend.start_worker()
    backend.settled(job_id, "success")
    for f in fails:
        backend.settled(f, "failed")
    assert "result    42" in backend.cli("job", job_id).stdout
    listed = json.loads(backend.cli("jobs", "--status", "success", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["total"] == 1
    assert json.loads(backend.cli("queues", "--json").stdout)["counts"]["failed"] == 2
    assert "requeued 2" in backend.cli("requeue", "--path", "tasks_example.work.fail").stdout
    wait_until(lambda: all(j.attempt == 2 and j.is_final for j in backend.store.get_many(fails)), 15, "requeued")
    assert backend.cli("job", "nope").exit_code == 3
    assert "running" in backend.cli("workers").stdout


def test_ties_in_change_time_are_ordered_by_id_in_every_store(backend):
    """Jobs whose last change has the same time (one enqueue batch) list by id, highest
    first, whatever their status: the same order in every store."""
    client, store = backend.client, backend.store
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(6)])
    moved = sorted(ids)[::2]  # every other id gets another status, same change time
    keys = client.broker.keys
    for job_id in moved:
        score = client.redis.zscore(keys.status("default", "queued"), job_id)
        client.redis.zrem(keys.status("default", "queued"), job_id)
        client.redis.zadd(keys.status("default", "cancel"), {job_id: score})
        client.redis.hset(keys.job(job_id), "status", "cancel")
    if backend.name == "mongo":
        store.jobs.update_many({"_id": {"$in": moved}}, {"$set": {"status": "cancel"}})
    wait_until(lambda: len(store.list_jobs(limit=10)) == 6, 10, "six jobs listed")
    assert [j.id for j in store.list_jobs(limit=10)] == sorted(ids, reverse=True)
    assert [j.id for j in store.list_jobs(limit=3)] == sorted(ids, reverse=True)[:3]


def test_pages_of_jobs_follow_each_other_without_gaps_or_repeats(backend):
    """The read API pages newest first with a cursor (the CLI's --before, the dashboard's
    pages): every job exactly once, in the store's order, ties of one batch included."""
    ids = backend.client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(25)], queue="paged")
    backend.client.cancel(ids[3], ids[17])  # two other statuses, changed later
    reader = backend.client.reader
    wait_until(lambda: len(reader.jobs(queue="paged", limit=100).jobs) == 25, 10, "25 jobs listed")
    seen, before = [], None
    while True:
        page = reader.jobs(queue="paged", limit=7, before=before)
        seen += [j.id for j in page.jobs]
        if page.next is None:
            break
        before = page.next
    assert seen == [j.id for j in reader.jobs(queue="paged", limit=100).jobs] and sorted(seen) == sorted(ids)
    assert seen[:2] == sorted([ids[3], ids[17]], reverse=True)  # changed last, listed first


def test_walking_every_page_lists_every_job_once(backend):
    """Cursors come from where a listing found each job (its last change), not from a
    time a worker took: pages that follow each other skip and repeat nothing."""
    ids = backend.client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(30)])
    more = backend.client.queue_jobs("testtasks.add", [{"a": i, "b": 2} for i in range(10)], delay=3600)
    backend.start_worker(greenlets=3)
    for job_id in ids:
        backend.settled(job_id, "success")
    seen, before = [], None
    while True:
        page = backend.client.reader.jobs(limit=7, before=before)
        seen += [j.id for j in page.jobs]
        assert page.total == 40
        if page.next is None:
            break
        before = page.next
    assert sorted(seen) == sorted(ids + more) and len(seen) == 40
