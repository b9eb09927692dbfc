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


def test_the_event_is_in_the_jobs_trace_with_its_logs_and_masked_params(client, worker, sentry, receiver):
    """Sentry and Jaeger/Tempo show one trace id; the job's log lines are breadcrumbs; its
    params (asked for) arrive with the password masked; runtime's frames are not in-app."""
    worker.start(sentry_dsn=sentry.dsn, otlp_endpoint=receiver.url, sentry_include_params=1)
    job = client.wait(client.queue_job("testtasks.log_then_fail", {"user": "ada", "password": "hunter2"}),
                      timeout_s=10)
    event = wait_until(lambda: sentry.events, 10, "an event")[0]
    assert event["contexts"]["trace"]["trace_id"] == job.report["trace"]["trace_id"]
    assert event["contexts"]["trace"]["parent_span_id"] == job.report["trace"]["span_id"]  # under the job span
    crumbs = event["breadcrumbs"]["values"]
    assert [c["category"] for c in crumbs] == ["log", "print"] and crumbs[0]["level"] == "warning"
    assert "checking ada" in crumbs[0]["message"] and "about to fail for ada" in crumbs[1]["message"]
    context = event["contexts"]["job"]
    assert context["params"] == {"user": "ada", "password": "***"} and context["see"] == f"runtime job {job.id}"
    assert "hunter2" not in str(event)
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    in_app = {f["module"].split(".")[0]: f.get("in_app") for f in frames if f.get("module")}
    assert in_app["testtasks"] is True and in_app["runtime"] is False, in_app


def test_params_stay_out_of_sentry_unless_asked(client, worker, sentry):
    worker.start(sentry_dsn=sentry.dsn)
    client.wait(client.queue_job("testtasks.log_then_fail", {"user": "ada", "password": "hunter2"}), timeout_s=10)
    event = wait_until(lambda: sentry.events, 10, "an event")[0]
    assert "params" not in event["contexts"]["job"] and "hunter2" not in str(event)


def test_a_job_lost_with_its_worker_is_logged_and_reported_once(client, workers, sentry):
    """The worker whose reaper takes the job back says so in a log line of its own and
    sends one warning to Sentry (the dead worker could not)."""
    poison = client.queue_job("tasks_example.work.crash", queue="doomed")
    first = workers.start("--queues", "doomed", "--sentry-dsn", sentry.dsn)
    assert first.wait(20) == 13  # the job killed it
    second = workers.start("--queues", "other", "--sentry-dsn", sentry.dsn)  # reaps, never runs it
    wait_until(lambda: client.get_job(poison).status == "queued", 20, "the job taken back")
    events = wait_until(lambda: [e for e in sentry.events if e.get("tags", {}).get("job_id") == poison], 10, "an event")
    assert events[0]["level"] == "warning" and events[0]["tags"]["reason"] == "worker-lost"
    assert events[0]["message"].startswith(f"job {poison} (tasks_example.work.crash) lost: ") and "queued again" in events[0]["message"]
    line = wait_until(lambda: [ln for ln in workers.log(second).splitlines() if f"job {poison} " in ln], 10, "log line")
    assert "tasks_example.work.crash lost" in line[0] and "queued again" in line[0]
    assert len([e for e in sentry.events if e.get("tags", {}).get("job_id") == poison]) == 1


def test_an_interrupted_job_is_one_warning(client, workers, sentry):
    import signal
    job_id = client.queue_job("testtasks.sleep", {"seconds": 30})
    proc = workers.start("--sentry-dsn", sentry.dsn)
    wait_until(lambda: client.get_job(job_id).status == "started", 10, "the job to start")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in workers.log(proc), 5, "the first signal handled")
    proc.send_signal(signal.SIGTERM)  # the second interrupts the running job
    assert proc.wait(10) == 0
    assert client.get_job(job_id).status == "interrupt"
    [event] = wait_until(lambda: sentry.events, 10, "an event")
    assert event["level"] == "warning" and event["tags"]["status"] == "interrupt" and event["tags"]["job_id"] == job_id
