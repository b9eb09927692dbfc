"""The Lua scripts obey runtime/status.py's transition table, and read well: one status
table, keys declared, the pieces they share generated from their Python sources."""

from __future__ import annotations

import re

import pytest

from runtime.broker import scripts
from runtime.broker.keys import SHAPES, Keys
from runtime.broker.moves import move
from runtime.messages import Outcome
from runtime.status import CLAIMED, FINAL, TRANSITIONS, Status


def _claim(broker, worker_id="w1", queue="default"):
    return broker.claim(worker_id, 100, [queue])[2]


def _end(broker, claimed, status, worker_id="w1", number=0.0):
    return broker.finish([Outcome(claimed.id, claimed.queue, claimed.attempt, status, number)], worker_id)


def _walk(client, settings):
    """Drive every script through every move it can make; returns the job ids."""
    b = client.broker
    ids = []

    def started(n):  # n jobs queued and claimed by w1
        ids.extend(new := client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * n))
        got = {c.id: c for c in _claim(b)}
        return [got[i] for i in new]

    # finish.lua: a running attempt ends in each of its outcomes
    for c, status in zip(started(7), (Status.SUCCESS, Status.FAILED, Status.ABORT, Status.TIMEOUT,
                                      Status.MAXRETRIES, Status.RETRY, Status.INTERRUPT)):
        assert _end(b, c, status) == []
    # claim.lua: from retry (due now) and interrupt (back in its queue)
    again = {c.id: c for c in _claim(b)}
    assert len(again) == 2
    for c in again.values():
        _end(b, c, Status.SUCCESS)
    # control.lua: cancel from queued, retry and interrupt; requeue from every final status and interrupt
    waiting = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=60)
    retry, interrupt, to_requeue = started(3)
    _end(b, retry, Status.RETRY, number=60.0)
    _end(b, interrupt, Status.INTERRUPT)
    ids.append(waiting)
    assert b.control("cancel", [waiting, retry.id, interrupt.id]) == ["ok"] * 3
    _end(b, to_requeue, Status.INTERRUPT)
    assert b.control("requeue", [to_requeue.id]) == ["ok"]
    # move.lua: to another queue from queued, retry and interrupt (the old id ends moved)
    retry, interrupt = started(2)
    _end(b, retry, Status.RETRY, number=60.0)
    _end(b, interrupt, Status.INTERRUPT)
    moving = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    ids.append(moving)
    assert [r for r, _ in move(b, [moving, retry.id, interrupt.id], "elsewhere", None)] == ["ok"] * 3
    finals = [i for i in ids if client.get_job(i).status in FINAL]
    assert len({client.get_job(i).status for i in finals}) == len(FINAL)
    requeuable = [i for i in finals if client.get_job(i).status != Status.MOVED]
    assert b.control("requeue", requeuable) == ["ok"] * len(requeuable)
    assert b.control("requeue", [moving]) == ["moved"]  # its job lives on under its new id
    # reap.lua: a dead worker's job requeued or failed (max_lost), a stopping worker's interrupted
    lost = started(1)[0]
    for i in range(settings.max_lost):
        b.reap(["w1"])  # requeued, then failed (worker-lost) at the last
        assert _end(b, lost, Status.SUCCESS) == [lost.id]  # stale: its worker was lost
        if i < settings.max_lost - 1:
            lost = _claim(b)[0]
    assert client.get_job(lost.id).status == Status.FAILED
    started(1)
    b.reap(stopping="w1")  # a clean stop: interrupt
    return ids


def test_every_move_a_script_makes_is_in_the_table_and_every_row_is_made(client, settings):
    ids = _walk(client, settings)
    moves = set()
    for job in client.store.get_many(ids):
        # a claim's entry is the move to started; the started entry after it is no move
        statuses = [Status.STARTED.value if h["status"] == CLAIMED else h["status"] for h in job.history]
        moves |= {(a, b) for a, b in zip(statuses, statuses[1:]) if a != b}
    table = {(s.value, t.value) for s, targets in TRANSITIONS.items() for t in targets}
    assert moves <= table, moves - table
    assert moves == table, table - moves  # the table has no row the scripts never make


@pytest.mark.parametrize("status", [Status.QUEUED, Status.SUCCESS, Status.CANCEL])
def test_an_outcome_for_a_job_no_longer_running_is_refused(client, status):
    """finish.lua asks the table: an attempt may end only a running job."""
    b = client.broker
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    [c] = _claim(b)
    client.redis.hset(b.keys.job(job_id), "status", status.value)  # moved on meanwhile
    assert _end(b, c, Status.FAILED) == [job_id]
    assert client.get_job(job_id).status == status


def test_an_outcome_sent_again_after_its_reply_was_lost_is_neither_stale_nor_written_twice(client):
    """A batch resent after its connection died (a master killed after it ran the script,
    the promoted replica holding the write) finds its own outcome: not reported stale,
    nothing written again; another outcome of that attempt is still stale."""
    b = client.broker
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    [c] = _claim(b)
    done = Outcome(c.id, c.queue, c.attempt, Status.SUCCESS, fields={"result": "2", "ended_at": "1.000001"})
    assert b.finish([done], "w1") == []
    written = client.redis.hgetall(b.keys.job(job_id))
    assert b.finish([done], "w1") == []
    assert client.redis.hgetall(b.keys.job(job_id)) == written
    other = Outcome(c.id, c.queue, c.attempt, Status.SUCCESS, fields={"result": "3", "ended_at": "1.000002"})
    assert b.finish([other], "w1") == [job_id]
    assert client.get_job(job_id).result == 2


def test_controls_the_table_forbids_are_refused_with_the_status(client):
    b = client.broker
    queued = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    assert b.control("abort", [queued]) == ["queued"] and b.control("requeue", [queued]) == ["queued"]
    _claim(b)
    assert b.control("cancel", [queued]) == ["started"] and b.control("requeue", [queued]) == ["started"]
    assert b.control("cancel", ["nope"]) == ["missing"]


def test_every_status_a_script_writes_is_a_status_and_the_lib_is_generated():
    lib = scripts.generated_lib()
    assert "--@" not in lib  # every generated part filled in
    for name in scripts.NAMES:
        text = (scripts.LUA / f"{name}.lua").read_text()
        written = set(re.findall(r"'HSET', \w+, 'status', '(\w+)'", text))
        written |= set(re.findall(r"entry\(\w+, '(\w+)'", text))
        written |= set(re.findall(r"can_move\(\w+, '(\w+)'\)", text))
        assert written <= {s.value for s in Status} | {CLAIMED}, (name, written)
        # which statuses a job may be in for a move comes from the table, never a literal
        checks = re.sub(r"can_move\([^)]*\)|key_status\([^)]*\)|'status', '\w+'|entry\(\w+, '\w+'|reindex\([^)]*\)",
                        "", text)
        checks = "\n".join(line for line in checks.splitlines() if not line.startswith("--"))  # comments
        assert "'started'" not in checks, name
    for kind in SHAPES:
        assert f"local function key_{kind}(" in lib


def test_every_script_declares_its_keys(client):
    """Each script's header lists its KEYS, and the keys a call passes are the ones the
    Python side builds from runtime.broker.keys."""
    for name in scripts.NAMES:
        header = (scripts.LUA / f"{name}.lua").read_text().split("--@LIB@--")[0]
        assert re.search(r"^-- KEYS\[1\b", header, re.M), name
        assert "KEYS: none" not in header, name
    k = Keys("p")
    assert (k.job("1"), k.ready("q"), k.running("w", "q"), k.status("q", "queued")) == (
        "p:j:1", "p:q:{q}", "p:w:w:running:{q}", "p:st:{q}:queued")
    call = client.broker._claim_call("w1", 5, ["a", "b"], False)
    nkeys = call[2]
    k = client.broker.keys
    assert list(call[3:3 + nkeys]) == [
        *k.queue_keys("a"), k.handoff("w1", "a"), k.running("w1", "a"), k.inflight("a"), k.dropped("a"),
        *k.queue_keys("b"), k.handoff("w1", "b"), k.running("w1", "b"), k.inflight("b"), k.dropped("b")]
