"""Metrics switches and export failures, against the real OTLP receiver."""

from __future__ import annotations

import logging

import pytest
from helpers import wait_until

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_otel_metrics_exporter_none_turns_metrics_off_without_errors(client, receiver, worker, monkeypatch, caplog):
    """A traces-only backend (Jaeger) refuses metrics: OTEL_METRICS_EXPORTER=none is the
    standard switch, and then nothing is sent and nothing is logged."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    receiver.metrics_status = 405
    w = worker.start(otlp_endpoint=receiver.url)
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)
    assert worker.stop(w) == 0  # a stop exports what is left
    assert receiver.refused == 0 and not receiver.points
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "export" in r.getMessage()]
    assert wait_until(lambda: receiver.spans, 10, "spans: traces stay on")


def test_a_failing_metrics_export_is_logged_once_per_outage(client, receiver, worker, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")  # ms
    receiver.metrics_status = 405
    w = worker.start(otlp_endpoint=receiver.url)
    client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10)
    wait_until(lambda: receiver.refused >= 5, 10, "5 refused exports")

    def lines(words):
        return [r for r in caplog.records if words in r.getMessage()]
    assert len(lines("metrics export to")) == 1, [r.getMessage() for r in caplog.records]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) <= 3  # the first refusal's, with its cause
    receiver.metrics_status = 200
    wait_until(lambda: lines("recovered"), 10, "the recovery line")
    assert worker.stop(w) == 0
    assert len(lines("recovered")) == 1 and any(p["name"] == "runtime.jobs" for p in receiver.points)
    assert logging.getLogger("opentelemetry.exporter").level == logging.NOTSET  # the exporters speak again


def test_metrics_port_serves_the_job_metrics_for_prometheus(client, worker, settings):
    """Without a collector: `--metrics-port` serves the same metrics at /metrics in
    Prometheus's text format, histograms in seconds with the task as a label."""
    import socket
    import urllib.request

    from runtime.errors import ConfigError
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = worker.start(metrics_port=port)
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 3) + [client.queue_job("tasks_example.work.fail")]
    client.wait(ids, timeout_s=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = [line for line in text.splitlines() if line.startswith("messaging_process_duration_seconds_bucket{")]
    add = [line for line in buckets if 'runtime_task_path="testtasks.add"' in line]
    assert any('le="0.005"' in line for line in add) and any('le="3600.0"' in line for line in add), buckets[:3]
    fail = [line for line in text.splitlines() if line.startswith("runtime_jobs_total{") and 'error_type="ValueError"' in line]
    assert fail and fail[0].endswith(" 1.0"), fail
    assert worker.stop(w) == 0
    with pytest.raises(ConfigError, match="metrics_port must be a port"):
        settings.replace(metrics_port=65535, processes=2)


def test_metrics_port_with_processes_serves_one_port_per_process(client, workers):
    """--processes 2 --metrics-port P: process 0 on P, process 1 on P + 1, each with the
    metrics of the jobs it ran."""
    import re
    import socket
    import urllib.request
    with socket.socket() as a, socket.socket() as b:  # two free ports in a row, found by trying
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        try:
            b.bind(("127.0.0.1", port + 1))
        except OSError:
            pytest.skip("no two free ports in a row")
    workers.start("--processes", "2", "--metrics-port", str(port))
    client.wait(client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 40), timeout_s=20)

    def ran(p):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        return sum(float(m) for m in re.findall(r'^runtime_jobs_total\{[^}]*testtasks.add[^}]*\} (\S+)$', text, re.M))

    counts = wait_until(lambda: (c := [ran(port), ran(port + 1)]) and None not in c and sum(c) == 40 and c, 20,
                        "both ports serving, with every job counted once")
    assert len(counts) == 2


def test_a_recycled_process_hands_its_metrics_port_to_its_replacement(client, workers):
    """--max-jobs recycles each process: its replacement serves on its port, so the
    scrape targets stay metrics_port .. metrics_port + N - 1."""
    import socket
    import urllib.request

    def free_run(n):
        socks = [socket.socket() for _ in range(n)]
        try:
            socks[0].bind(("127.0.0.1", 0))
            base = socks[0].getsockname()[1]
            for i, sk in enumerate(socks[1:], 1):
                sk.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            return None
        finally:
            for sk in socks:
                sk.close()

    port = free_run(3)
    if port is None:
        pytest.skip("no three free ports in a row")
    workers.start("--processes", "2", "--metrics-port", str(port), "--max-jobs", "10")
    client.wait(client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 60), timeout_s=30)
    recycled = wait_until(lambda: len([e for e in client.reader.events(50) if e["event"] == "recycle"]) >= 2, 20,
                          "processes recycled")
    assert recycled

    def serving(p):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).status == 200
        except OSError:
            return False

    wait_until(lambda: serving(port) and serving(port + 1), 20, "both ports served by the replacements")
    assert not serving(port + 2)


def test_the_workers_own_histograms_hold_what_the_sdk_histogram_would():
    """The worker aggregates its job histograms itself (a tenth of the SDK's cost): the
    same buckets (values on a bound in the bucket below it), count, sum, min and max."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from diagnostics.histograms import JobHistogram
    from diagnostics.metrics import SECONDS_BUCKETS
    values = [0.0, 0.005, 0.0050001, 0.3, 1.0, 7.5, 3600.0, 5000.0, 0.0001]
    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader]).get_meter("t").create_histogram(
        "d", unit="s", explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
    ours = JobHistogram("d", "s", "", SECONDS_BUCKETS)
    for v in values:
        sdk.record(v, {"k": "v"})
        ours.record(("v",), {"k": "v"}, v)
    want = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    got = ours.metric().data.data_points[0]
    assert (got.count, got.sum, got.min, got.max, list(got.bucket_counts), tuple(got.explicit_bounds)) == \
        (want.count, want.sum, want.min, want.max, list(want.bucket_counts), tuple(want.explicit_bounds))
    assert got.attributes == {"k": "v"}
