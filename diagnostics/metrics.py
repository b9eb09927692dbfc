"""OpenTelemetry metrics of a worker, exported over OTLP like the traces.

Instruments (names from the OTel messaging conventions where they exist):

| name                       | kind      | unit | attributes                                       |
|----------------------------|-----------|------|--------------------------------------------------|
| messaging.process.duration | histogram | s    | JOB_ATTRIBUTES (wall time of the attempt)        |
| runtime.job.wait           | histogram | s    | JOB_ATTRIBUTES (due -> started)                  |
| runtime.jobs               | counter   | 1    | JOB_ATTRIBUTES (attempts ended)                  |
| runtime.queue.depth        | gauge     | 1    | messaging.destination.name, runtime.queue.state (ready/delayed) |
| runtime.worker.rss         | gauge     | By   | runtime.worker.id                                |

JOB_ATTRIBUTES: ``messaging.system`` ("runtime"), ``messaging.destination.name`` (the
queue), ``messaging.operation.name`` ("process"), ``runtime.task.path``,
``runtime.job.status`` and, for an attempt that did not succeed, ``error.type`` (the
exception's qualified class name, else the status). Histograms use SECONDS_BUCKETS, the
bucket boundaries the messaging conventions advise for durations in seconds, extended to
an hour for long jobs (the SDK's default boundaries are milliseconds: every job under 5 s
would fall in one bucket).

Exported every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 10,000) to the OTLP endpoint of
the traces (``--otlp-endpoint`` or the ``OTEL_EXPORTER_OTLP_*`` variables), and once more
when the worker stops; ``OTEL_METRICS_EXPORTER=none`` turns them off (as a backend that
takes traces only, like Jaeger, wants). A failing export is logged once per outage, and
its end once. Without an endpoint, nothing is measured or imported.
"""

from __future__ import annotations

import os
from typing import Any

from runtime.context import JobContext
from runtime.middleware import Middleware, WorkerView
from runtime.process import rss_reader

from .otlp import export_timeout_s, exporter_off, otlp_endpoint, quiet_failures, resource_attributes

#: Histogram bucket boundaries, seconds: the OTel messaging conventions' advice for
#: ``messaging.process.duration`` (5 ms to 10 s), then on to an hour.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def otlp_metrics_url(settings: Any) -> str | None:
    """The OTLP/HTTP metrics URL: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else the traces'
    endpoint with ``/v1/metrics``; None when there is none or OTEL_METRICS_EXPORTER=none."""
    if exporter_off("METRICS"):
        return None
    url = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if url:
        return url
    traces = otlp_endpoint(settings)
    return traces[: -len("/v1/traces")] + "/v1/metrics" if traces and traces.endswith("/v1/traces") else None


def error_type(outcome: Any) -> str | None:
    """``error.type`` of an ended attempt: None for a success, else the exception's
    qualified class name (without ``builtins.``), else the status."""
    if outcome.status.value == "success":
        return None
    exc = outcome.exc
    if exc is None:
        return str(outcome.status.value)
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Metrics(Middleware):
    """Counts, durations and waits of jobs; queue depth and worker RSS, over OTLP."""

    runs_before = ("diagnostics.timing.Timing",)  # its after-hook reads the timing Timing reports

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.provider: Any = None
        self.worker: Any = None

    def on_worker_start(self, worker: WorkerView | None) -> None:
        url = otlp_metrics_url(self.settings)
        if not url or worker is None:
            return
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        self.worker = worker
        exporter = quiet_failures(OTLPMetricExporter, "metrics")(endpoint=url, timeout=export_timeout_s("METRICS"))
        reader = PeriodicExportingMetricReader(exporter)
        self.provider = MeterProvider(metric_readers=[reader], resource=Resource.create(resource_attributes(worker)))
        meter = self.provider.get_meter("runtime")
        self.duration = meter.create_histogram("messaging.process.duration", unit="s",
                                               description="Duration of processing a job",
                                               explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.wait = meter.create_histogram("runtime.job.wait", unit="s", description="From due to started",
                                           explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.counts: dict[tuple[str, str, str, str | None], int] = {}
        self.attrs: dict[tuple[str, str, str, str | None], dict[str, str]] = {}

        def jobs(options: Any) -> list[Any]:  # counted locally (a dict increment per job)
            return [Observation(n, self.attrs[key]) for key, n in list(self.counts.items())]

        meter.create_observable_counter("runtime.jobs", [jobs], unit="1", description="Job attempts ended, by status")

        read_rss = rss_reader()  # one kept-open /proc/self/statm for every export; None: unreadable

        def depth(options: Any) -> list[Any]:
            try:
                depths = worker.queue_depths()
            except Exception:  # noqa: BLE001 - a metric must not break the export
                return []
            return [Observation(n, {"messaging.destination.name": q, "runtime.queue.state": state})
                    for q, d in depths.items() for state, n in d.items()]

        def rss(options: Any) -> list[Any]:
            n = read_rss.read() if read_rss is not None else None
            return [] if n is None else [Observation(n, {"runtime.worker.id": worker.id})]

        meter.create_observable_gauge("runtime.queue.depth", [depth], unit="1", description="Jobs waiting")
        meter.create_observable_gauge("runtime.worker.rss", [rss], unit="By", description="Worker RSS")

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        if self.provider is not None:
            self.provider.force_flush(5000)
            self.provider.shutdown()
            self.provider = None

    def applies(self, path: str) -> bool:
        return self.provider is not None

    def after_job(self, job: JobContext, outcome: Any) -> None:
        if self.provider is None:
            return
        status = outcome.status.value
        error = error_type(outcome)
        key = (status, job.queue, job.path, error)
        attrs = self.attrs.get(key)
        if attrs is None:
            attrs = self.attrs[key] = {
                "messaging.system": "runtime", "messaging.destination.name": job.queue,
                "messaging.operation.name": "process", "runtime.task.path": job.path, "runtime.job.status": status}
            if error is not None:
                attrs["error.type"] = error
        self.counts[key] = self.counts.get(key, 0) + 1
        timing = job.report.get("timing")
        if timing:
            self.duration.record(timing["wall_s"], attrs)
            if "wait_s" in timing:
                self.wait.record(timing["wait_s"], attrs)
