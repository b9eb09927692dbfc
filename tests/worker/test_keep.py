"""What Redis keeps of a finished job: a task with ``keep='none'`` leaves nothing once it
succeeds (MRQ's raw queues), yet a client waiting on it gets its whole document; one with
``keep='compact'`` keeps its status, times, params and result only; a failure is always
kept whole; ``ttl_s`` of 0 for a status means the same as 'none' for every task."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until, with_settings

from runtime.client import Client
from runtime.errors import ConfigError, JobNotFound
from runtime.hashfields import REPORT_FIELDS, is_history_field
from runtime.job import Job


def _keys_of(client: Client, job_id: str) -> list[str]:
    return [k for k in client.redis.scan_iter(f"{client.settings.key_prefix}:*") if job_id in str(k)]


def _listed(client: Client, status: str, job_id: str) -> bool:
    return client.redis.zscore(client.broker.keys.status("default", status), job_id) is not None


def test_unkept_success_leaves_nothing(client, worker):
    unkept = [client.queue_job("testtasks.add_unkept", {"a": i, "b": 1}) for i in range(5)]
    kept = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    worker.burst()
    for job_id in unkept:
        with pytest.raises(JobNotFound):
            client.get_job(job_id)
        assert _keys_of(client, job_id) == []
        assert not _listed(client, "success", job_id) and not _listed(client, "started", job_id)
    assert client.get_job(kept).result == 2 and _listed(client, "success", kept)


def test_a_client_waiting_on_an_unkept_job_gets_its_whole_document(client, worker):
    job_id = client.queue_job("testtasks.add_unkept", {"a": 2, "b": 3})
    got: list[Job] = []
    waiting = threading.Thread(target=lambda: got.append(client.wait(job_id, timeout_s=20)))
    waiting.start()
    wait_until(lambda: client.redis.exists(client.broker.keys.notify(job_id)), timeout_s=10)
    worker.start()
    waiting.join(20)
    [job] = got
    assert job.status == "success" and job.result == 5 and job.attempt == 1
    assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "success"]
    assert _keys_of(client, job_id) == []


def test_a_compact_success_keeps_its_status_times_params_and_result_only(client, worker):
    job_id = client.queue_job("testtasks.add_compact", {"a": 2, "b": 5})
    full = client.queue_job("testtasks.chatty", {"n": 1, "lines": 1})
    worker.burst()
    job = client.get_job(job_id)
    assert job.status == "success" and job.result == 7 and job.params == {"a": 2, "b": 5}
    assert job.queued_at <= job.started_at <= job.ended_at and job.attempt == 1 and job.worker
    assert job.history == [] and job.report == {} and job.logs == [] and job.progress is None
    assert _listed(client, "success", job_id)
    stored = client.redis.hgetall(client.broker.keys.job(job_id))
    assert not {"history", "report", "logs", "progress", "began", "deadline"} & set(stored)
    assert not any(is_history_field(k) or k in REPORT_FIELDS for k in stored)
    kept = client.get_job(full)  # a task without keep= keeps everything
    assert kept.report and kept.logs and [h["status"] for h in kept.history][-1] == "success"


def test_a_compact_success_after_a_failed_attempt_keeps_nothing_of_that_attempt(client, worker):
    job_id = client.queue_job("testtasks.flaky_compact")
    worker.burst()
    job = client.get_job(job_id)
    assert job.status == "success" and job.result == "ok" and job.attempt == 2 and job.retries == 1
    assert job.exc_type is None and job.traceback is None and job.logs == [] and job.report == {}
    stored = client.redis.hgetall(client.broker.keys.job(job_id))
    assert not any(is_history_field(k) or k in REPORT_FIELDS for k in stored), stored


def test_unkept_failure_is_kept(client, worker):
    job_id = client.queue_job("testtasks.fail_unkept", {})
    worker.start()
    job = client.wait(job_id, timeout_s=10)
    assert job.status == "failed" and job.exc_type == "ValueError"
    assert client.get_job(job_id).status == "failed" and _listed(client, "failed", job_id)


def test_a_ttl_of_zero_keeps_no_document_of_that_status(settings, worker):
    client = Client(settings)
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(ttl_s={"success": 0})
    with pytest.raises(JobNotFound):
        client.get_job(job_id)
    assert not _listed(client, "success", job_id)


@pytest.mark.parametrize("bad", [-1, float("inf")])
def test_a_negative_or_infinite_ttl_is_refused(settings, bad):
    with pytest.raises(ConfigError, match="ttl_s must be >= 0"):
        with_settings(settings, ttl_s={"success": bad})
