"""Moving a waiting job to another queue (runtime.broker.moves), on a standalone Redis and
on the suite's Redis Cluster with the two queues on different masters: the job gets a new
id in its new queue and runs there once; its old id ends moved and says where it went;
waiting on the old id follows it; a claimed job is refused; a move cut short between its
steps is ended by the recovery, and never makes a second copy."""

from __future__ import annotations

import re
import time
from typing import Any

import gevent
import pytest
import redis.cluster
from helpers import InProcess, wait_until

from runtime.broker.moves import finish_moves, landing
from runtime.client import Client
from runtime.client.search import JobFilter
from runtime.dashboard.operations import Operations
from runtime.errors import InvalidParams, InvalidTransition
from runtime.status import Status

ON_CLUSTER_TOO = True


def two_queues(client: Client) -> tuple[str, str]:
    """Two queue names; on a cluster, whose keys live on different masters."""
    rc = client.redis
    if not isinstance(rc, redis.cluster.RedisCluster):
        return "mv-a", "mv-b"
    by_node: dict[str, str] = {}
    for i in range(200):
        by_node.setdefault(rc.get_node_from_key(client.broker.keys.ready(f"mv{i}")).name, f"mv{i}")
        if len(by_node) == 2:
            a, b = sorted(by_node.values())
            return a, b
    raise AssertionError("no two queues on two masters")


def claims(client: Client, job_id: str) -> int:
    return sum(1 for h in client.get_job(job_id).history if h["status"] == "claimed")


def step_one(client: Client, job_id: str, queue: str) -> str:
    """Step 1 of a move alone (move.lua), as a mover that dies right after it leaves it;
    returns the job's new id."""
    b = client.broker
    [[reply]] = b.calls([b.call("move", [b.keys.job(job_id)], (queue, "", "", job_id))])
    assert isinstance(reply, list) and reply[0] == "ok" and reply[2] == "1"  # its new id, its document marked moved
    return str(reply[1])


def new_id_of(job_id: str, queue: str) -> re.Pattern[str]:
    """The form of the id ``job_id`` gets in ``queue``."""
    rest = re.sub("@m[0-9a-f]{12}$", "", job_id.partition(":")[2])
    return re.compile(re.escape(f"{queue}:{rest}@m") + "[0-9a-f]{12}")


def test_a_job_moved_to_another_queue_gets_a_new_id_and_runs_there_once(client: Client,
                                                                        worker: InProcess) -> None:
    a, b = two_queues(client)
    ready = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue=a, priority=3)
    delayed = client.queue_job("testtasks.add", {"a": 2, "b": 2}, queue=a, delay=600)
    new_ready, new_delayed = client.move(ready, delayed, queue=b, priority=5, by="ann")
    assert new_id_of(ready, b).fullmatch(new_ready) and new_id_of(delayed, b).fullmatch(new_delayed)
    old = client.get_job(ready)
    assert (old.status, old.moved_to, old.queue) == (Status.MOVED, new_ready, a)
    assert old.history[-1]["status"] == "moved" and old.history[-1]["to"] == new_ready
    copy = client.get_job(new_ready)
    assert (copy.status, copy.queue, copy.priority, copy.moved_from) == (Status.QUEUED, b, 5, ready)
    assert copy.due_at == old.due_at and copy.params == {"a": 1, "b": 2}
    last = copy.history[-1]
    assert (last["status"], last["from"], last["by"], last["note"]) == (
        "queued", ready, "ann", f"moved from {a} (priority 3) to {b} (priority 5)")
    assert "moved" not in [h["status"] for h in copy.history]
    keys = client.broker.keys
    assert client.redis.zscore(keys.ready(a), ready) is None
    assert client.redis.zscore(keys.scheduled(b), new_delayed) is not None
    assert client.broker.queue_names() == sorted([a, b])
    counts = client.store.counts()
    assert (counts["moved"], counts["queued"]) == (2, 2)
    # the same move again changes nothing, gives the same id and says it was moved already
    assert client.move(ready, queue=b) == [new_ready]
    assert client.moves([ready], queue=b) == [("already-moved", new_ready)]
    client.cancel(new_delayed)
    worker.burst(queues=f"{a},{b}")
    done = client.wait(ready, timeout_s=15)  # the old id: followed to the new one
    assert (done.id, done.status, done.result, done.attempt) == (new_ready, Status.SUCCESS, 3, 1)
    assert claims(client, new_ready) == 1 and client.get_job(ready).attempt == 0
    assert client.wait([new_ready, ready], timeout_s=5)[1].id == new_ready


def test_a_move_made_again_after_its_copy_ran_is_skipped_by_a_bulk_move(client: Client, worker: InProcess) -> None:
    """A job moved before (its copy has run since) moved to the same queue again: the same
    new id, replied 'already-moved', so a bulk move counts it skipped, not changed; one
    moved to a third queue is refused with its status, 'moved'."""
    a, b = two_queues(client)
    ran = client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue=a)
    [new] = client.move(ran, queue=b)
    worker.burst(queues=b)
    assert client.wait(new, timeout_s=15).status == Status.SUCCESS
    assert client.moves([ran], queue=b) == [("already-moved", new)]
    assert client.move(ran, queue=b) == [new]  # a retried move is not an error
    assert client.moves([ran], queue="mv-third") == [("moved", ran)]
    with pytest.raises(InvalidTransition, match="its status is moved"):
        client.move(ran, queue="mv-third")
    waiting = client.queue_jobs("testtasks.add", [{"a": 2, "b": 2}] * 2, queue=a)
    ops = Operations(client)
    op = ops.start("move", JobFilter(queue=a), "ann", {"queue": b})
    done = wait_until(lambda: (o := ops.get(op)) is not None and o["state"] == "done" and o, 15, "the bulk move")
    assert (done["total"], done["ok"], done["skipped"]) == (3, 2, 1)
    assert all(client.get_job(i).status == Status.MOVED for i in waiting)
    assert (client.get_job(new).attempt, client.get_job(new).status) == (1, Status.SUCCESS)  # untouched


def test_a_priority_change_keeps_the_id_and_a_claimed_job_is_refused(client: Client, worker: InProcess) -> None:
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue=a)
    assert client.move(job, priority=7) == [job] and client.get_job(job).priority == 7
    assert client.move(job, queue=a, priority=8) == [job] and client.get_job(job).priority == 8
    [claimed] = client.broker.claim("w1", 10, [a])[2]
    assert claimed.id == job
    with pytest.raises(InvalidTransition, match=r"cannot move job .*: its status is started \(only waiting"):
        client.move(job, queue=b)
    assert client.moves([job, f"{a}:nope"], queue=b) == [("started", job), ("missing", f"{a}:nope")]
    assert client.get_job(job).status == Status.STARTED
    assert client.get_job(job).moved_to is None and client.store.counts()["moved"] == 0
    with pytest.raises(InvalidParams, match="moved job's id"):
        client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue=b, job_id="report@m0123456789ab")


def test_a_move_cut_short_after_its_first_step_is_ended_by_the_recovery(client: Client, worker: InProcess) -> None:
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add", {"a": 2, "b": 3}, queue=a)
    new = step_one(client, job, b)
    assert client.get_job(job).status == Status.MOVED
    assert client.redis.exists(client.broker.keys.job(new)) == 0
    assert finish_moves(client.broker) == 0  # within the grace: a live mover may be at it
    assert finish_moves(client.broker, grace_s=0) == 1
    assert client.redis.zcard(client.broker.keys.moving(a)) == 0
    assert client.get_job(new).status == Status.QUEUED
    assert finish_moves(client.broker, grace_s=0) == 0
    worker.burst(queues=f"{a},{b}")
    done = client.wait(job, timeout_s=15)
    assert (done.id, done.result, done.attempt) == (new, 5, 1)


def test_a_move_cut_short_after_its_copy_landed_never_makes_a_second_copy(client: Client,
                                                                         worker: InProcess) -> None:
    """The copy landed and ran, and its document went (keep="none"): the recovery confirms
    the move without landing it again."""
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add_unkept", {"a": 1, "b": 1}, queue=a)
    new = step_one(client, job, b)
    b_ = client.broker
    doc: dict[str, Any] = client.redis.hgetall(b_.keys.job(job))  # type: ignore[assignment]
    made = landing(job, doc)
    assert made is not None and made[0] == new
    land = b_.call("land", [*b_.keys.queue_keys(b)[:3], b_.keys.landed(b), b_.keys.job(new)], (repr(time.time()), *made[1]))
    assert b_.calls([land]) == [["ok"]]
    worker.burst(queues=b)
    assert client.redis.exists(b_.keys.job(new)) == 0  # ran; not kept
    assert finish_moves(client.broker, grace_s=0) == 1
    assert client.redis.exists(b_.keys.job(new)) == 0 and client.redis.zcard(b_.keys.ready(b)) == 0
    assert client.redis.zcard(b_.keys.moving(a)) == 0
    assert b_.calls([land]) == [["exists"]]


def test_waiting_on_a_job_whose_move_was_cut_short_follows_it_once_recovered(client: Client,
                                                                              worker: InProcess) -> None:
    """wait.lua takes a job still in its moving set for not ended: the waiter hears of it
    when the move is confirmed, and follows it (twice here: moved back to its first queue)."""
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add", {"a": 4, "b": 4}, queue=a)
    new = step_one(client, job, b)
    keys = client.broker.keys

    def recover() -> list[str]:
        wait_until(lambda: client.redis.exists(keys.notify(job)), 10, "the waiter on the old id")
        assert finish_moves(client.broker, grace_s=0) == 1
        return client.move(new, queue=a)  # back to its first queue: a third id

    g = gevent.spawn(recover)
    worker.start(queues=a)  # not b: the copy waits there until moved back
    done = client.wait(job, timeout_s=20)
    [back] = g.get(timeout=5)
    assert new_id_of(new, a).fullmatch(back) and back not in (job, new)
    assert (done.id, done.status, done.result, done.moved_from) == (back, Status.SUCCESS, 8, new)
    assert claims(client, back) == 1 and client.get_job(new).moved_to == back


def test_a_landed_entry_goes_after_a_day_once_its_job_left_its_moving_set(client: Client) -> None:
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue=a)
    new = step_one(client, job, b)  # in a's moving set
    keys = client.broker.keys
    two_days_ago = time.time() - 2 * 86_400
    client.redis.zadd(keys.landed(b), {f"{new} {job}": two_days_ago, f"{b}:x@m0123456789ab {a}:x": two_days_ago})
    client.redis.sadd(keys.queues, b)  # as a landing names it
    assert finish_moves(client.broker, grace_s=3600) == 0  # the move is left to a later pass
    assert client.redis.zrange(keys.landed(b), 0, -1) == [f"{new} {job}"]  # kept: its job is still moving
    assert finish_moves(client.broker, grace_s=0) == 1  # its copy "landed" (the entry says so): only confirmed
    assert client.redis.exists(keys.job(new)) == 0 and client.redis.zcard(keys.landed(b)) == 0


def test_a_caller_chosen_id_queued_again_after_its_move_moves_under_another_new_id(client: Client) -> None:
    """The new id hashes the old id and when that job was queued: a job that takes the id of
    one moved before (its document expired) is not taken for a move done already."""
    a, b = two_queues(client)
    job = client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue=a, job_id="nightly")
    [first] = client.move(job, queue=b)
    client.redis.delete(client.broker.keys.job(job))  # its moved document expired
    assert client.queue_job("testtasks.add", {"a": 2, "b": 2}, queue=a, job_id="nightly") == job
    [second] = client.move(job, queue=b)
    assert second != first and new_id_of(job, b).fullmatch(second)
    assert client.get_job(second).params == {"a": 2, "b": 2} and client.get_job(first).params == {"a": 1, "b": 1}
