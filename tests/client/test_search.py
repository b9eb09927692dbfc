"""The read API's searches under the dashboard (Reader.search, .matching_ids, .failures,
.rates) and the ``by`` of control actions, over both job stores."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import wait_until
from mongo_fixtures import mongo_env

from runtime.client import Client
from runtime.client.search import JobFilter

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)

TASKS = "tasks_example,testtasks,dashtasks"


@pytest.fixture(params=["redis", "mongo"])
def backend(request: Any, client: Client) -> tuple[Client, dict[str, Any]]:
    if request.param == "redis":
        return client, {"task_modules": TASKS}
    s = request.getfixturevalue("mongo_settings")
    return Client(s), {**mongo_env(s), "task_modules": TASKS}


def settled(c: Client, ids: list[str], status: str) -> None:
    wait_until(lambda: all(c.store.get(i).status.value == status for i in ids), 15, f"jobs {status} in the store")


def test_search_by_worker_exception_text_and_time(backend: tuple[Client, dict[str, Any]], worker: Any,
                                                  tmp_path: Any) -> None:
    c, extra = backend
    failing = [c.queue_job("dashtasks.fail_unless", {"flag": str(tmp_path / "no"), "api_token": f"t{i}"},
                           check=False) for i in range(3)]
    fine = [c.queue_job("testtasks.add", {"a": i, "b": 7}) for i in range(4)]
    w = worker.burst(**extra)
    settled(c, failing, "failed")
    settled(c, fine, "success")
    r = c.reader
    assert {j.id for j in r.search(JobFilter(exc_type="ValueError")).jobs} == set(failing)
    assert {j.id for j in r.search(JobFilter(exc_type="builtins.ValueError")).jobs} == set(failing)
    assert [j.id for j in r.search(JobFilter(text='"api_token":"t1"')).jobs] == [failing[1]]
    assert [j.id for j in r.search(JobFilter(text='"api_token": "T1"')).jobs] == [failing[1]]
    assert {j.id for j in r.search(JobFilter(worker=w.id)).jobs} == set(failing + fine)
    assert r.search(JobFilter(worker="nobody")).jobs == []
    assert r.search(JobFilter(since=time.time() + 60)).jobs == []
    assert len(r.search(JobFilter(until=time.time() + 60, status="success")).jobs) == 4
    assert r.search(JobFilter(until=time.time() - 3600)).jobs == []
    page = r.search(JobFilter(text='"b":7'), limit=10, budget=2)  # out of budget before the page is full
    assert page.partial and page.next and page.scanned == 2
    assert sorted(r.matching_ids(JobFilter(text='"b":7'))) == sorted(fine)
    with pytest.raises(ValueError):
        JobFilter(status="nope")


def test_failures_grouped_and_rates(backend: tuple[Client, dict[str, Any]], worker: Any, tmp_path: Any) -> None:
    c, extra = backend
    failing = [c.queue_job("dashtasks.fail_unless", {"flag": str(tmp_path / "no")}, check=False) for _ in range(3)]
    hostile = c.queue_job("dashtasks.hostile", {"text": "boom"}, check=False)
    c.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(**extra)
    settled(c, [*failing, hostile], "failed")
    groups, scanned = c.reader.failures()
    assert scanned == 4
    assert [(g.exc_type.rpartition(".")[2], g.path, g.count) for g in groups] == \
        [("ValueError", "dashtasks.fail_unless", 3), ("ValueError", "dashtasks.hostile", 1)]
    g = groups[0]
    assert g.first_seen <= g.last_seen and g.example.id in failing and "missing" in (g.example.traceback or "")
    rates = c.reader.rates()
    assert sum(b["success"] for b in rates) == 1 and sum(b["failed"] for b in rates) == 4


def test_control_records_who_asked(backend: tuple[Client, dict[str, Any]], worker: Any) -> None:
    c, extra = backend
    waiting = c.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="nobody-serves")
    done = c.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(**extra)
    settled(c, [done], "success")
    c.cancel(waiting, by="alice from 10.0.0.1")
    c.requeue(done, by="bob from 10.0.0.2")
    assert c.control_many("cancel", [waiting, "missing-id"], "carol") == ["cancel", "missing"]
    wait_until(lambda: c.store.get(waiting).history[-1].get("by") == "alice from 10.0.0.1", 15, "the cancel entry")
    last = wait_until(lambda: (h := c.store.get(done).history[-1]).get("by") and h, 15, "the requeue entry")
    assert (last["status"], last["by"], last["note"]) == ("queued", "bob from 10.0.0.2", "requeued from success")


def test_move_waiting_jobs_to_another_queue_and_priority(backend: tuple[Client, dict[str, Any]], worker: Any) -> None:
    from runtime.errors import InvalidParams, InvalidTransition
    c, extra = backend
    ready = c.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="mv-a")
    delayed = c.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="mv-a", delay=600)
    done = c.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(**extra)
    settled(c, [done], "success")
    replies = c.moves([ready, delayed, done, "nope"], queue="mv-b", priority=5, by="ann from 10.0.0.1")
    assert [r for r, _ in replies] == ["ok", "ok", "success", "missing"]
    (_, moved), (_, moved_delayed) = replies[:2]
    assert moved.startswith("mv-b:") and moved_delayed.startswith("mv-b:")
    keys = c.broker.keys
    due_ms = c.live.get(moved).due_at * 1000  # type: ignore[operator]
    assert c.redis.zscore(keys.ready("mv-b"), moved) == pytest.approx(-5 * 1e13 + due_ms)
    assert c.redis.zscore(keys.ready("mv-a"), ready) is None
    assert c.redis.zscore(keys.scheduled("mv-b"), moved_delayed) is not None
    last = wait_until(lambda: (j := c.store.get(moved)).queue == "mv-b" and j.history[-1], 15, "the moved copy")
    assert (last["status"], last["by"], last["note"]) == ("queued", "ann from 10.0.0.1",
                                                          "moved from mv-a (priority 0) to mv-b (priority 5)")
    assert c.store.get(moved).priority == 5
    wait_until(lambda: c.store.get(ready).moved_to == moved, 15, "the old id's document, moved")
    with pytest.raises(InvalidTransition, match="only waiting jobs can be moved"):
        c.move(done, queue="mv-b")
    with pytest.raises(InvalidParams):
        c.move(moved, queue="x:y")
    with pytest.raises(InvalidParams):
        c.move(moved, priority=1000)
    c.cancel(moved_delayed)  # a burst worker waits for a delayed job of its queues
    worker.burst(**{**extra, "queues": "mv-b"})
    settled(c, [moved], "success")


def _walk(r: Any, f: JobFilter, sort: str, limit: int = 2) -> list[str]:
    """Every id of ``f`` in ``sort`` order, page after page by the cursors."""
    out: list[str] = []
    before = within = None
    while True:
        page = r.search(f, limit=limit, before=before, sort=sort, within=within)
        out += [j.id for j in page.jobs]
        if page.next is None:
            return out
        before, within = page.next, page.within


def test_sorted_by_queue_time_start_end_and_duration(backend: tuple[Client, dict[str, Any]], worker: Any) -> None:
    c, extra = backend
    # queued oldest first; each runs longer than the one before, one at a time
    ids = [c.queue_job("testtasks.sleep", {"seconds": 0.05 * (i + 1)}, queue="sorted") for i in range(4)]
    worker.burst(queues="sorted", greenlets=1, **extra)
    settled(c, ids, "success")
    waiting = [c.queue_job("testtasks.add", {"a": i, "b": 0}, queue="sorted-waiting") for i in range(3)]
    r = c.reader
    newest_first = list(reversed(ids))
    for sort in ("queued", "started", "ended", "run"):
        f = JobFilter(status="success")
        assert _walk(r, f, sort) == newest_first, sort  # the later queued ran later and longer
        assert _walk(r, JobFilter(queue="sorted"), sort) == newest_first, sort
    assert _walk(r, JobFilter(), "run")[:4] == newest_first  # waiting jobs have no run time
    assert _walk(r, JobFilter(status="queued"), "queued") == list(reversed(waiting))
    # a cursor is a position, not an offset: a job finishing meanwhile does not shift the next page
    first = r.search(JobFilter(status="success"), limit=2, sort="ended")
    c.queue_job("testtasks.add", {"a": 9, "b": 9}, queue="sorted")
    worker.burst(queues="sorted", **extra)
    rest = r.search(JobFilter(status="success"), limit=10, before=first.next, sort="ended", within=first.within)
    assert [j.id for j in first.jobs + rest.jobs][:4] == newest_first
    with pytest.raises(ValueError, match="unknown sort"):
        r.search(JobFilter(), sort="size")
