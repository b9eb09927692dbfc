"""Sentry: job errors reach a real local HTTP receiver, tagged, with no cross-job leakage
(workers in-process)."""

from __future__ import annotations

from helpers import wait_until


def test_failed_jobs_are_reported_once_with_their_tags_and_no_leakage(client, worker, sentry):
    worker.start(greenlets=50, sentry_dsn=sentry.dsn)
    ids = client.queue_jobs("tasks_example.work.fail", [{"message": f"boom {n}"} for n in range(50)])
    client.wait(ids, timeout_s=20)
    wait_until(lambda: len(sentry.events) >= 50, 10, "50 events")
    by_job = {}
    for event in sentry.events:
        tags = event["tags"]
        by_job[tags["job_id"]] = (tags, event["exception"]["values"][-1]["value"])
    assert len(by_job) == 50 and len(sentry.events) == 50
    for n, job_id in enumerate(ids):
        tags, message = by_job[job_id]
        assert message == f"boom {n}"
        assert tags["task"] == "tasks_example.work.fail" and tags["queue"] == "default"
        assert tags["attempt"] == "1" and tags["worker"] and tags["status"] == "failed"


def test_retried_attempts_are_not_errors_unless_asked_and_locals_are_off(client, worker, sentry):
    worker.start(sentry_dsn=sentry.dsn)
    flaky = client.queue_job("tasks_example.work.flaky", {"fail_times": 1})
    failing = client.queue_job("tasks_example.work.fail", {"message": "secret"})
    client.wait([flaky, failing], timeout_s=20)
    wait_until(lambda: sentry.events, 10, "an event")
    assert [e["tags"]["job_id"] for e in sentry.events] == [failing]
    frames = sentry.events[0]["exception"]["values"][-1]["stacktrace"]["frames"]
    assert all("vars" not in f for f in frames)


def test_otel_trace_id_is_a_tag_when_tracing(client, worker, sentry, receiver):
    worker.start(sentry_dsn=sentry.dsn, otlp_endpoint=receiver.url)
    job = client.wait(client.queue_job("tasks_example.work.fail"), timeout_s=10)
    event = wait_until(lambda: sentry.events, 10, "an event")[0]
    assert event["tags"]["otel.trace_id"] == job.report["trace"]["trace_id"]
