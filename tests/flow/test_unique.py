"""Caller-chosen job ids and unique keys: a second enqueue inside the window returns the
existing job (atomic in enqueue.lua, so concurrent producers queue one job); bad ids are
refused with one line and queue nothing."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from helpers import cli, wait_until

from runtime.client import Client
from runtime.errors import InvalidParams
from runtime.status import Status


def _ready(client: Client) -> list[str]:
    return client.redis.zrange(client.broker.keys.ready("default"), 0, -1)


def test_a_caller_chosen_id_is_queued_once_while_the_job_exists(client, worker):
    """The job's id is the caller's under its queue (a job id names its queue); the same
    caller id, or the id it got back, queues nothing while that job exists."""
    mine = "default:report:2026-12-06"
    assert client.queue_job("testtasks.add", {"a": 1, "b": 2}, job_id="report:2026-12-06") == mine
    assert client.queue_job("testtasks.add", {"a": 5, "b": 5}, job_id="report:2026-12-06") == mine
    assert client.queue_job("testtasks.add", {"a": 5, "b": 5}, job_id=mine) == mine
    assert _ready(client) == [mine]
    worker.burst()
    job = client.get_job(mine)
    assert job.status == Status.SUCCESS and job.result == 3  # the first params: the second was not queued
    assert client.queue_job("testtasks.add", {"a": 5, "b": 5}, job_id="report:2026-12-06") == mine
    assert _ready(client) == []
    other = client.queue_job("testtasks.add", {"a": 5, "b": 5}, job_id="report:2026-12-06", queue="q2")
    assert other == "q2:report:2026-12-06" and client.get_job(other).status == Status.QUEUED  # another queue  # still exists (kept for ttl_s after it ended): not queued again


def test_a_unique_key_returns_the_job_holding_it_inside_the_window(client, worker):
    first = client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="sync:customer-7", unique_for=60)
    again = client.queue_job("testtasks.add", {"a": 2, "b": 2}, unique_key="sync:customer-7", unique_for=60)
    other = client.queue_job("testtasks.add", {"a": 3, "b": 3}, unique_key="sync:customer-8", unique_for=60)
    assert again == first and other != first
    assert sorted(_ready(client)) == sorted([first, other])
    ttl_ms = client.redis.pttl(client.broker.keys.unique("default", "sync:customer-7"))
    assert 0 < ttl_ms <= 60_000


def test_a_unique_key_frees_once_its_window_passed(client):
    first = client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="k", unique_for=0.05)
    wait_until(lambda: not client.redis.exists(client.broker.keys.unique("default", "k")), 5, "the key to expire")
    second = client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="k", unique_for=0.05)
    assert second != first and len(_ready(client)) == 2


def test_a_unique_key_whose_job_is_gone_is_taken_by_the_next_job(client):
    first = client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="k", unique_for=60)
    client.redis.delete(client.broker.keys.job(first))  # its document expired or was deleted
    second = client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="k", unique_for=60)
    assert second != first and client.get_job(second).status == Status.QUEUED


def test_twenty_concurrent_producers_queue_one_job_per_key_and_per_id(settings, client):
    """20 threads, each with a client (a connection) of its own, released at once."""
    clients = [Client(settings) for _ in range(20)]
    gate = threading.Barrier(20)
    got: list[tuple[str, str]] = []

    def produce(c: Client, n: int) -> None:
        gate.wait()
        by_key = c.queue_job("testtasks.add", {"a": n, "b": 0}, unique_key="nightly", unique_for=30)
        by_id = c.queue_job("testtasks.add", {"a": n, "b": 0}, job_id="nightly-2026-12-06")
        got.append((by_key, by_id))

    threads = [threading.Thread(target=produce, args=(c, n)) for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 20
    assert len({k for k, _ in got}) == 1 and {i for _, i in got} == {"default:nightly-2026-12-06"}
    assert sorted(_ready(client)) == sorted([got[0][0], "default:nightly-2026-12-06"])
    assert client.redis.zcard(client.broker.keys.status("default", "queued")) == 2


def test_a_batch_with_a_repeated_unique_key_queues_the_first(client):
    jobs = [client._new("testtasks.add", {"a": n, "b": 0}, "default", 0, None, None, unique=("batch", 60))
            for n in range(3)]
    _, held = client.broker.enqueue(jobs)
    assert held == {jobs[1].id: jobs[0].id, jobs[2].id: jobs[0].id}
    assert _ready(client) == [jobs[0].id]


def test_queue_jobs_takes_an_id_or_unique_key_per_job(client):
    """One id or key per params dict (None: none); a key twice in the batch, or held from
    before, queues the first job only and returns its id in the other places."""
    held = client.queue_job("testtasks.add", {"a": 0, "b": 0}, unique_key="c:9", unique_for=60)
    ids = client.queue_jobs("testtasks.add", [{"a": n, "b": 0} for n in range(5)],
                            unique_keys=["c:1", "c:2", "c:1", None, "c:9"], unique_for=60, batch_size=2)
    assert ids[0] == ids[2] and ids[4] == held and len(set(ids)) == 4
    assert sorted(_ready(client)) == sorted({*ids, held})
    assert client.get_job(ids[0]).params == {"a": 0, "b": 0} and client.get_job(ids[3]).params == {"a": 3, "b": 0}
    again = client.queue_jobs("testtasks.add", [{"a": 7, "b": 7}, {"a": 8, "b": 8}], job_ids=["day:1", None])
    mine = "default:day:1"  # a job id names its queue
    assert again[0] == mine and client.queue_jobs("testtasks.add", [{"a": 9, "b": 9}], job_ids=["day:1"]) == [mine]
    assert client.get_job(mine).params == {"a": 7, "b": 7}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"job_ids": ["x"]}, r"job_ids must give one per params dict \(2, None for a job without\), got 1"),
    ({"job_ids": "ab"}, "job_ids must give one per params dict .* got a string"),
    ({"unique_keys": ["k", "a b"], "unique_for": 5}, "unique_key 'a b' holds characters"),
    ({"unique_keys": ["k", None]}, "unique_key needs unique_for"),
    ({"unique_for": 5}, "unique_for is given without a unique_key"),
    ({"unique_keys": ["k", "l"], "unique_for": "5"}, "unique_for must be a number of seconds"),
])
def test_queue_jobs_refuses_bad_ids_and_keys_before_queuing_any(client, kwargs, message):
    with pytest.raises(InvalidParams, match=message) as info:
        client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}, {"a": 2, "b": 2}], **kwargs)
    assert "\n" not in str(info.value) and _ready(client) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"job_id": ""}, "job_id must be a non-empty string"),
    ({"job_id": "a b"}, "holds characters that are not allowed"),
    ({"job_id": "{slot}x"}, "holds characters that are not allowed"),
    ({"job_id": "x" * 201}, "at most 200"),
    ({"job_id": 7}, "job_id must be a non-empty string"),
    ({"unique_key": "k"}, "unique_key needs unique_for"),
    ({"unique_for": 5}, "unique_for is given without a unique_key"),
    ({"unique_key": "k", "unique_for": 0}, "unique_for must be above 0 and at most 315360000 seconds"),
    ({"unique_key": "k", "unique_for": -5}, "unique_for must be above 0"),
    ({"unique_key": "k", "unique_for": float("nan")}, "unique_for must be above 0"),
    ({"unique_key": "k", "unique_for": float("inf")}, "unique_for must be above 0"),
    ({"unique_key": "k", "unique_for": 315360001}, "at most 315360000 seconds"),
    ({"unique_key": "k", "unique_for": True}, "unique_for must be a number of seconds"),
    ({"unique_key": "k", "unique_for": "soon"}, "unique_for must be a number of seconds"),
    ({"unique_key": "k", "unique_for": "30"}, "unique_for must be a number of seconds"),
    ({"unique_key": "a,b", "unique_for": 5}, "unique_key 'a,b' holds characters"),
])
def test_bad_ids_and_keys_are_refused_with_one_line_and_queue_nothing(client, kwargs, message):
    with pytest.raises(InvalidParams, match=message) as info:
        client.queue_job("testtasks.add", {"a": 1, "b": 1}, **kwargs)
    assert "\n" not in str(info.value)
    assert _ready(client) == []


def test_cli_enqueue_with_job_id_and_unique_key(settings, client):
    first = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", "cli-1")
    again = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", "cli-1")
    assert first.exit_code == again.exit_code == 0 and first.stdout.strip() == again.stdout.strip() == "default:cli-1"
    u1 = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--unique-key", "u", "--unique-for", "60")
    u2 = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--unique-key", "u", "--unique-for", "60")
    assert u1.stdout.strip() == u2.stdout.strip() and len(_ready(client)) == 2
    bad = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", "no spaces")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "not allowed" in bad.stderr
    assert len(_ready(client)) == 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e12", "soon"])
def test_cli_unique_for_is_checked_as_the_api_checks_it(settings, client, value):
    r = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--unique-key", "u", "--unique-for", value)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "unique-for" in r.stderr.replace("_", "-"), r.stderr
    assert _ready(client) == []


def test_cli_enqueue_says_on_stderr_when_an_existing_job_holds_the_id_or_key(settings, client, worker):
    first = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", "held-1")
    assert first.exit_code == 0 and first.stderr == ""
    worker.burst()  # it ran: success, its document kept for its ttl_s
    again = cli(settings, "enqueue", "testtasks.add", '{"a": 5, "b": 5}', "--job-id", "held-1", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == {"id": "default:held-1", "queued": False}
    note = again.stderr.strip()
    assert "\n" not in note and note.startswith("not queued: a job with id default:held-1 exists (success, ended 20"), note
    assert "; the id frees in " in note, note
    u1 = cli(settings, "enqueue", "testtasks.add", "{}", "--no-check", "--unique-key", "u7", "--unique-for", "300")
    u2 = cli(settings, "enqueue", "testtasks.add", "{}", "--no-check", "--unique-key", "u7", "--unique-for", "300")
    assert u1.stderr == "" and u2.stdout == u1.stdout
    held = u2.stderr.strip()
    assert held.startswith(f"not queued: job {u1.stdout.strip()} holds unique key 'u7' (queued); the key frees in ")
    assert held.endswith((" 4 min 59 s", " 5 min 0 s")), held
    waiting = cli(settings, "enqueue", "testtasks.add", "{}", "--no-check", "--job-id", u1.stdout.strip())
    assert "frees once that job has ended" in waiting.stderr  # not final: no expiry yet


def test_the_redis_key_of_a_unique_key_is_under_the_prefix(client):
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, unique_key="x:y", unique_for=5)
    assert client.redis.get(f"{client.settings.key_prefix}:u:{{default}}:x:y")
    assert isinstance(client.redis, redis.Redis)


def test_a_job_id_in_the_form_of_a_schedule_fire_id_is_refused(settings, client):
    """A caller-chosen id of a fire time's form would take that fire's id: it never runs."""
    for forged in ("tick1@2026-12-06T05:00:00Z", "tick1@2026-12-06T05:00:00.600Z"):
        r = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", forged)
        assert r.exit_code == 2 and "only schedules may use" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert _ready(client) == []
    ok = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--job-id", "user@example.com")
    assert ok.exit_code == 0 and ok.stdout.strip() == "default:user@example.com"
