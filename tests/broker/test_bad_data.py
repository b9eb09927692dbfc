"""Bad data in Redis is contained: a job document that cannot be read fails that job
alone (reason bad-document, saying what was wrong), never its batch; the CLI shows it; a
queue entry with no document is dropped, logged and counted."""

from __future__ import annotations

import logging

import pytest
import redis
from helpers import cli

CORRUPTIONS = {
    "priority": ("priority", b"abc", "priority is 'abc', not a number"),
    "attempt": ("attempt", b"abc", 'attempt is "abc", not an integer'),
    "lost": ("lost", b"abc", "lost is 'abc', not a number"),
    "queued_at": ("queued_at", None, "queued_at is missing"),
    "meta": ("meta", b"{not json", "meta is not a JSON object"),
    "params": ("params", b'{"a": "\xff\xfe"}', "params is not UTF-8 text"),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_a_corrupt_document_fails_that_job_alone_and_the_cli_shows_it(client, worker, settings, what):
    field, value, problem = CORRUPTIONS[what]
    healthy = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(10)])
    bad = client.queue_job("testtasks.add", {"a": 1, "b": 1}, priority=0)
    raw = redis.Redis.from_url(settings.redis_url)  # bytes, as anything else could write them
    key = client.broker.keys.job(bad)
    if value is None:
        raw.hdel(key, field)
    else:
        raw.hset(key, field, value)
    worker.burst(greenlets=4)
    assert [j.status.value for j in client.store.get_many(healthy)] == ["success"] * 10
    job = client.get_job(bad)
    assert job.status.value == "failed" and job.reason == "bad-document", (job.status, job.exc_message)
    assert problem in job.exc_message and job.exc_type == "runtime.errors.BadDocument"
    shown = cli(settings, "job", bad)
    assert shown.exit_code == 0 and "bad-document" in shown.stdout
    listed = cli(settings, "jobs", "--status", "failed")
    assert listed.exit_code == 0 and bad in listed.stdout


def test_a_history_entry_or_field_the_reader_cannot_read_is_shown_not_raised(client, settings):
    job = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    key = client.broker.keys.job(job)
    client.redis.hset(key, "progress", "half")
    client.redis.hset(key, "h1", client.redis.hget(key, "h1") + ",{broken")
    shown = cli(settings, "job", job)
    assert shown.exit_code == 0
    assert "progress = 'half'" in shown.stdout
    assert "history = '[" in shown.stdout and "{broken'" in shown.stdout
    assert cli(settings, "jobs").exit_code == 0


def test_a_queue_entry_without_a_document_is_dropped_logged_and_counted(client, worker, caplog):
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    client.redis.zadd(client.broker.keys.ready("default"), {"no-such-job": 0})
    with caplog.at_level(logging.ERROR, logger="runtime.broker"):
        worker.burst()
    assert all(j.status.value == "success" for j in client.store.get_many(ids))
    assert "no-such-job" in caplog.text and "job document is missing" in caplog.text
    assert client.redis.get(client.broker.keys.dropped("default")) == "1"
    assert client.redis.zscore(client.broker.keys.ready("default"), "no-such-job") is None


def test_a_document_without_its_path_or_with_a_nan_time_is_shown(client, settings):
    no_path = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    nan = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    client.redis.hdel(client.broker.keys.job(no_path), "path")
    client.redis.hset(client.broker.keys.job(nan), "due_at", "nan")
    for job_id, shown in ((no_path, "path = '(missing)'"), (nan, "due_at = 'nan'")):
        out = cli(settings, "job", job_id)
        assert out.exit_code == 0 and shown in out.stdout, out.stdout
    listed = cli(settings, "jobs")
    assert listed.exit_code == 0 and no_path in listed.stdout and nan in listed.stdout


def test_a_status_that_is_not_one_fails_that_job_alone_and_a_broken_history_is_shown(client, worker, settings):
    healthy = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(7)])
    bogus, broken_history = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 2)
    client.redis.hset(client.broker.keys.job(bogus), "status", "bogus")
    client.redis.hset(client.broker.keys.job(broken_history), "h1", "x")
    worker.burst(greenlets=4)
    assert [j.status.value for j in client.store.get_many(healthy)] == ["success"] * 7
    job = client.get_job(bogus)
    assert job.status.value == "failed" and job.reason == "bad-document" and "status is \"bogus\"" in job.exc_message
    job = client.get_job(broken_history)
    assert job.status.value == "success" and job.result == 2 and job.unreadable["history"] == "x"
    assert [e["status"] for e in job.history] == ["claimed", "started", "success"]  # the entries it could read


def test_keys_of_another_type_are_shown_not_raised(client, settings):
    client.redis.set(client.broker.keys.job("zz"), "x")
    client.redis.zadd(client.broker.keys.status("default", "queued"), {"zz": 1})
    job = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    client.redis.hset(client.broker.keys.job(job), "h1", "x")
    client.redis.hset(client.broker.keys.job(job), "hn", "x")
    for args in (("job", "zz"), ("job", job), ("jobs",), ("jobs", "--json")):
        out = cli(settings, *args)
        assert out.exit_code == 0 and "Traceback" not in out.stdout, (args, out.stdout, out.stderr)
    assert "WRONGTYPE" in cli(settings, "job", "zz").stdout
