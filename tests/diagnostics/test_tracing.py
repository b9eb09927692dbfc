"""Tracing through a worker to a real OTLP/HTTP receiver (in-process, and in a process
of its own for what only a process shows: its own provider, the flush at SIGTERM)."""

from __future__ import annotations

import re
import signal

import pytest
from helpers import cli, rt, wait_until

from runtime.client import Client

PRODUCER, CONSUMER = 4, 5  # SpanKind values in OTLP


def processed(receiver, job_id):
    """The consumer spans of one job."""
    return [s for s in receiver.find(kind=CONSUMER) if s["attributes"]["messaging.message.id"] == job_id]


@pytest.fixture
def traced(settings, receiver):
    """A client whose process traces (its provider exports to the receiver)."""
    import diagnostics.tracing as tracing
    s = settings.replace(otlp_endpoint=receiver.url)
    client = Client(s)
    yield client, tracing.provider(s)
    tracing.flush()


def test_one_trace_from_the_request_to_the_job_and_its_children(traced, receiver, workers):
    """In a process of its own: its spans come from a provider made after it started."""
    client, provider = traced
    with provider.get_tracer("web").start_as_current_span("GET /upload") as web:
        job_id = client.queue_job("testtasks.traced_child", {"n": 1})
    trace_id = format(web.get_span_context().trace_id, "032x")
    workers.start(otlp_endpoint=receiver.url)
    job = client.wait(job_id, timeout_s=10)
    provider.force_flush()
    assert job.result == trace_id and job.report["trace"]["trace_id"] == trace_id
    consumer = wait_until(lambda: receiver.find(kind=CONSUMER), 10, "consumer span")[0]
    producer = receiver.find(name="send default")[0]
    child = wait_until(lambda: receiver.find(name="child 1"), 10, "child span")[0]
    assert {producer["trace_id"], consumer["trace_id"], child["trace_id"]} == {trace_id}
    assert producer["parent_span_id"] == format(web.get_span_context().span_id, "016x")
    assert consumer["parent_span_id"] == producer["span_id"] and child["parent_span_id"] == consumer["span_id"]
    assert (producer["kind"], consumer["kind"]) == (PRODUCER, CONSUMER)
    assert consumer["name"] == "process testtasks.traced_child"  # tasks apart in Jaeger's operation list
    a = consumer["attributes"]
    assert a["messaging.destination.name"] == "default" and a["messaging.message.id"] == job_id
    assert a["messaging.operation.type"] == "process" and a["runtime.task.path"] == "testtasks.traced_child"
    assert a["runtime.job.status"] == "success" and consumer["status"][0] == 1  # OK
    assert a["runtime.job.wait_s"] == job.report["timing"]["wait_s"]  # one definition of the wait
    assert consumer["resource"]["process.pid"] == workers.procs[0].pid  # made after start, not inherited


def test_a_job_queued_by_a_job_stays_in_the_trace(traced, receiver, worker):
    client, provider = traced
    worker.start(otlp_endpoint=receiver.url)
    parent_id = client.queue_job("testtasks.queue_child", {"path": "testtasks.add", "params": {"a": 1, "b": 2}})
    child_id = client.wait(parent_id, timeout_s=10).result
    client.wait(child_id, timeout_s=10)
    parent = wait_until(lambda: processed(receiver, parent_id), 10, "parent span")[0]
    child = wait_until(lambda: processed(receiver, child_id), 10, "child span")[0]
    send = [s for s in receiver.find(name="send default") if s["attributes"]["messaging.message.id"] == child_id][0]
    assert child["trace_id"] == parent["trace_id"] == send["trace_id"]
    assert send["parent_span_id"] == parent["span_id"] and child["parent_span_id"] == send["span_id"]


def test_50_greenlets_keep_their_spans_apart(traced, receiver, worker):
    client, _ = traced
    ids = client.queue_jobs("testtasks.traced_child", [{"n": n, "sleep_s": 0.05} for n in range(50)])
    worker.start(greenlets=50, otlp_endpoint=receiver.url)
    jobs = client.wait(ids, timeout_s=20)
    wait_until(lambda: len(receiver.find(kind=CONSUMER)) == 50 and
               sum(s["name"].startswith("child") for s in receiver.spans) == 50, 10, "100 spans")
    by_job = {s["attributes"]["messaging.message.id"]: s for s in receiver.find(kind=CONSUMER)}
    for n, job in enumerate(jobs):
        consumer = by_job[job.id]
        child = receiver.find(name=f"child {n}")[0]
        assert child["parent_span_id"] == consumer["span_id"] and child["trace_id"] == consumer["trace_id"]
        assert job.result == consumer["trace_id"]
        assert len({s["trace_id"] for s in by_job.values()}) == 50


def test_status_is_set_for_base_exception_endings_and_retries_link(traced, receiver, worker):
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    slow = client.queue_job("testtasks.too_slow", {"seconds": 5})
    flaky = client.queue_job("tasks_example.work.flaky", {"fail_times": 1})
    assert client.wait(slow, timeout_s=10).status == "timeout"
    assert client.wait(flaky, timeout_s=10).status == "success"

    def spans(job_id):
        return processed(receiver, job_id)
    timeout = wait_until(lambda: spans(slow), 10, "timeout span")[0]
    assert timeout["status"][0] == 2 and "timeout" in timeout["status"][1] and "exception" in timeout["events"]
    first, second = sorted(wait_until(lambda: len(spans(flaky)) == 2 and spans(flaky), 10, "2 attempts"),
                           key=lambda s: s["attributes"]["runtime.job.attempt"])
    assert first["attributes"]["runtime.job.status"] == "retry" and first["status"][0] == 2
    assert second["trace_id"] == first["trace_id"] and (first["trace_id"], first["span_id"]) in second["links"]


def test_every_attempt_is_in_the_requests_trace_with_its_baggage_and_in_the_history(traced, receiver, worker,
                                                                                     settings):
    """A job retried twice: its three attempts are children of the producer span (one
    trace from the request), each linked to the one before, each with the request's
    baggage; the job's history names each attempt's trace id and error, and `runtime job`
    shows them."""
    from opentelemetry import baggage, context
    client, provider = traced
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with provider.get_tracer("web").start_as_current_span("POST /orders") as web:
            job_id = client.queue_job("testtasks.flaky_baggage", {"fail_times": 2})
    finally:
        context.detach(token)
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(job_id, timeout_s=10)
    assert job.status == "success" and job.result == {"tenant": "acme"}
    trace_id = format(web.get_span_context().trace_id, "032x")
    attempts = sorted(wait_until(lambda: len(processed(receiver, job_id)) == 3 and processed(receiver, job_id), 10,
                                 "3 attempts"), key=lambda s: s["attributes"]["runtime.job.attempt"])
    send = receiver.find(name="send default")[0]
    assert {a["trace_id"] for a in attempts} == {trace_id}
    assert all(a["parent_span_id"] == send["span_id"] for a in attempts)
    assert attempts[1]["links"] == [(trace_id, attempts[0]["span_id"])]
    assert attempts[2]["links"] == [(trace_id, attempts[1]["span_id"])]
    ended = [h for h in job.history if h["status"] in ("retry", "success")]
    assert [h.get("trace_id") for h in ended] == [trace_id] * 3
    assert [h.get("error") for h in ended] == [
        "ConnectionError: attempt 1 baggage {'tenant': 'acme'}", "ConnectionError: attempt 2 baggage {'tenant': 'acme'}",
        None]
    shown = cli(settings, "job", job_id).stdout
    assert "error=ConnectionError: attempt 2 baggage {'tenant': 'acme'}" in shown and f"trace_id={trace_id}" in shown


def test_a_child_span_cut_off_by_the_jobs_timeout_ends_in_error_with_an_event(traced, receiver, worker):
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(client.queue_job("testtasks.slow_child", {"sleep_s": 5}), timeout_s=10)
    assert job.status == "timeout"
    child = wait_until(lambda: receiver.find(name="slow child"), 10, "the child span")[0]
    assert child["status"][0] == 2 and child["status"][1].startswith("JobTimeout: "), child["status"]
    event = child["event_attributes"][child["events"].index("exception")]
    assert event["exception.type"] == "runtime.errors.JobTimeout"
    assert child["parent_span_id"] == processed(receiver, job.id)[0]["span_id"]


def test_a_failed_publish_ends_its_producer_span_in_error(settings, receiver, full_redis):
    import diagnostics.tracing as tracing
    from runtime.errors import BrokerUnavailable
    full = Client(settings.replace(redis_url=full_redis, otlp_endpoint=receiver.url))
    with pytest.raises(BrokerUnavailable):
        full.queue_job("testtasks.add", {"a": 1, "b": 2})
    tracing.flush()
    send = wait_until(lambda: receiver.find(name="send default"), 10, "the producer span")[0]
    assert send["status"][0] == 2 and send["status"][1].startswith("BrokerUnavailable: ") and "exception" in send["events"]


def test_a_stopping_worker_flushes_its_spans(traced, receiver, workers):
    client, _ = traced
    proc = workers.start(otlp_endpoint=receiver.url)
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 5)
    client.wait(ids, timeout_s=10)
    proc.send_signal(signal.SIGTERM)  # before the 1 s export schedule
    assert proc.wait(10) == 0
    assert len(receiver.find(kind=CONSUMER)) == 5


def test_the_stop_flush_reuses_the_export_threads_kept_alive_connection(traced, receiver, workers):
    """The collector keeps the connection alive: the spans left at stop go out on the
    connection the export thread opened (from the worker's own thread that failed with
    "Cannot switch to a different thread" and lost them)."""
    client, _ = traced
    proc = workers.start(otlp_endpoint=receiver.url)
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)
    wait_until(lambda: receiver.find(kind=CONSUMER), 10, "the first span, exported by the thread")
    client.wait(client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 5), timeout_s=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert len(receiver.find(kind=CONSUMER)) == 6
    assert "failed" not in workers.log(proc)


def test_a_job_that_waited_for_a_greenlet_says_so_on_its_span(traced, receiver, worker, settings):
    client, _ = traced
    first, second = client.queue_jobs("testtasks.sleep", [{"seconds": 0.2}] * 2)
    worker.start(otlp_endpoint=receiver.url, greenlets=1, prefetch=2)
    client.wait([first, second], timeout_s=10)
    spans = {i: wait_until(lambda i=i: processed(receiver, i), 10, "its span")[0] for i in (first, second)}
    assert "runtime.job.wait_reason" not in spans[first]["attributes"]
    assert spans[second]["attributes"]["runtime.job.wait_reason"] == "busy"
    assert spans[second]["attributes"]["runtime.job.wait_s"] >= 0.15  # the first one's run
    assert "waited, prefetched, for a free greenlet" in cli(settings, "job", second).stdout


def test_the_task_annotates_its_own_span(traced, receiver, workers):
    """In a worker process the job's span is runtime's light JobSpan: the task's own
    attributes, events and exceptions reach the collector as with the SDK's spans."""
    client, _ = traced
    job_id = client.queue_job("testtasks.annotate_span", {"user": "ada"})
    proc = workers.start("--burst", otlp_endpoint=receiver.url)
    assert proc.wait(20) == 0
    assert client.get_job(job_id).result == "JobSpan"
    [span] = wait_until(lambda: processed(receiver, job_id), 10, "the job's span")
    assert span["attributes"]["app.user"] == "ada" and span["attributes"]["app.bad"] is None
    assert span["attributes"]["runtime.job.status"] == "success" and span["status"][0] == 1  # OK
    assert span["events"] == ["checked", "exception"]
    assert span["event_attributes"][0] == {"rows": 3}
    assert span["event_attributes"][1]["exception.type"] == "KeyError"
    assert "raise KeyError" in span["event_attributes"][1]["exception.stacktrace"]


def test_attempts_of_a_job_from_an_untraced_producer_share_one_trace(client, receiver, worker):
    job_id = client.queue_job("tasks_example.work.flaky", {"fail_times": 2})  # no producer span
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(job_id, timeout_s=20)
    traces = [h["trace_id"] for h in job.history if "trace_id" in h]
    assert job.status == "success" and len(traces) == 3 and len(set(traces)) == 1, job.history


def test_a_trace_the_sampler_left_out_gets_no_link(client, workers, monkeypatch, settings):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    proc = workers.start("--burst", otlp_endpoint="http://127.0.0.1:9", trace_link="jaeger")
    assert proc.wait(20) == 0
    job = client.get_job(job_id)
    assert job.status == "success" and "trace" not in job.report
    assert "trace " not in cli(settings, "job", job_id).stdout


def test_span_name_queue_gives_the_conventions_strict_form(traced, receiver, worker):
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url, span_name="queue")
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)
    assert wait_until(lambda: receiver.find(kind=CONSUMER), 10, "consumer span")[0]["name"] == "process default"


@pytest.mark.parametrize("limit", [None, 1024])
def test_a_deep_stack_arrives_with_its_exception_line(traced, receiver, worker, monkeypatch, limit):
    """40 frames: whole by default; under a 1,024-character limit cut from the front with
    a marker, so the innermost frames and the exception line still arrive."""
    if limit:
        monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", str(limit))
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    job_id = client.queue_job("testtasks.deep_raise", {"depth": 40})
    assert client.wait(job_id, timeout_s=10).status == "failed"
    span = wait_until(lambda: processed(receiver, job_id), 10, "consumer span")[0]
    stack = span["event_attributes"][span["events"].index("exception")]["exception.stacktrace"]
    assert stack.rstrip().endswith("ValueError: bottom of 40 frames") and "in down" in stack
    if limit:
        assert len(stack) <= limit and re.match(r"\[\d+ characters of outer frames cut\]\n", stack)
    else:
        assert stack.startswith("Traceback (most recent call last):") and "in deep_raise" in stack


def test_job_logs_carry_trace_and_span_ids(traced, receiver, worker):
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(client.queue_job("testtasks.chatty", {"n": 3, "lines": 1}), timeout_s=10)
    ids = job.report["trace"]
    assert f"trace_id={ids['trace_id']} span_id={ids['span_id']}" in job.logs[0]


def test_runtime_spawn_keeps_the_job_context_in_child_greenlets(traced, receiver, worker):
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(client.queue_job("testtasks.spawn_children", {"n": 3}), timeout_s=10)
    assert sum("spawned child" in line for line in job.logs) == 3
    consumer = wait_until(lambda: processed(receiver, job.id), 10, "consumer span")[0]
    children = wait_until(lambda: len([s for s in receiver.spans if s["name"].startswith("spawned")]) == 3 and
                          [s for s in receiver.spans if s["name"].startswith("spawned")], 10, "spawned spans")
    assert all(c["parent_span_id"] == consumer["span_id"] for c in children)


def test_metrics_are_exported_over_otlp(client, receiver, worker):
    w = worker.start(otlp_endpoint=receiver.url)
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 5) + [client.queue_job("tasks_example.work.fail")]
    client.wait(ids, timeout_s=10)
    assert worker.stop(w) == 0  # the last export happens at stop
    points = {}
    for p in receiver.points:
        points.setdefault(p["name"], []).append(p)
    jobs = {(p["attributes"]["runtime.job.status"], p["attributes"]["runtime.task.path"]): p["value"]
            for p in points["runtime.jobs"]}
    assert jobs[("success", "testtasks.add")] == 5 and jobs[("failed", "tasks_example.work.fail")] == 1, receiver.points
    durations = points["messaging.process.duration"]
    assert sum(p["value"]["count"] for p in durations) == 6
    # seconds, with the task and the error type: "p95 run time of task X" can be charted
    add = [p for p in durations if p["attributes"]["runtime.task.path"] == "testtasks.add"]
    assert add[0]["value"]["bounds"][:3] == [0.005, 0.01, 0.025] and add[0]["value"]["bounds"][-1] == 3600
    assert sum(add[0]["value"]["buckets"][:2]) == 5  # each add took under 10 ms: not all in one bucket of 5 s
    assert "error.type" not in add[0]["attributes"]
    assert 0 <= add[0]["value"]["min"] <= add[0]["value"]["max"] <= add[0]["value"]["sum"]
    # an exemplar for each bucket that holds a job: a click from the bucket to that job's trace
    traces = {client.get_job(i).report["trace"]["trace_id"] for i in ids}
    exemplars = add[0]["value"]["exemplars"]
    assert len(exemplars) == sum(1 for n in add[0]["value"]["buckets"] if n) and {t for t, _ in exemplars} <= traces
    fail = [p for p in durations if p["attributes"]["runtime.task.path"] == "tasks_example.work.fail"]
    assert fail[0]["attributes"]["error.type"] == "ValueError", fail
    assert fail[0]["attributes"]["runtime.job.status"] == "failed"
    assert {p["attributes"]["runtime.task.path"] for p in points["runtime.job.wait"]} >= {"testtasks.add"}
    assert any(p["attributes"]["runtime.queue.state"] == "ready" for p in points["runtime.queue.depth"])
    assert points["runtime.worker.rss"][0]["value"] > 10 * 2**20


def test_a_trace_link_template_with_single_braces_is_one_line_at_start(settings, cli_env, client):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    r = rt({**cli_env, "RUNTIME_TRACE_LINK": 'http://grafana/explore?left={"queries":[{"query":"{trace_id}"}]}'},
           "job", job_id)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("error: trace_link must be an http(s) URL template with {trace_id} and any other brace "
                               "doubled ({{ }}), or one of jaeger, tempo: ")
    from runtime.errors import ConfigError
    from runtime.settings import Settings
    for bad in ("tempox", "http://x/{{trace_id}}", "http://x/{trace_id.upper}", "http://x/{trace}", "http://x/{0}",
                "http://x/{trace_id", "ftp://x/{trace_id}"):
        with pytest.raises(ConfigError):
            Settings(trace_link=bad)
    assert Settings(trace_link="https://x/{{a}}/{trace_id}").trace_link == "https://x/{{a}}/{trace_id}"


def test_the_trace_link_is_a_terminal_hyperlink_to_tempo(traced, receiver, worker, cli_env):
    """In a terminal (a pty), `runtime job` prints the trace as an OSC 8 hyperlink to
    Grafana's Explore on the provisioned Tempo data source, its JSON URL-encoded."""
    import shlex
    import subprocess
    import sys
    client, _ = traced
    worker.start(otlp_endpoint=receiver.url)
    job = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    trace_id = job.report["trace"]["trace_id"]
    command = shlex.join([sys.executable, "-m", "runtime", "job", job.id])
    done = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=60,  # in a pty
                          env={**cli_env, "RUNTIME_TRACE_LINK": "tempo"}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    text = out.decode()
    url = re.search(r"\x1b\]8;;(\S+)\x1b\\", text)
    assert url, text
    assert url[1].startswith("http://localhost:3000/explore?schemaVersion=1&orgId=1&panes=%7B%22a%22")
    assert f"%22query%22%3A%22{trace_id}%22" in url[1] and "{" not in url[1] and '"' not in url[1]
