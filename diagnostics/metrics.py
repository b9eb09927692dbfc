"""OpenTelemetry metrics of a worker, exported over OTLP like the traces.

Instruments (names from the OTel messaging conventions where they exist):

| name                          | kind      | unit | attributes                                  |
|-------------------------------|-----------|------|---------------------------------------------|
| messaging.process.duration    | histogram | s    | messaging.system, destination.name, operation.name, |
|                               |           |      | runtime.job.status                          |
| runtime.jobs                  | counter   | 1    | runtime.job.status, messaging.destination.name, runtime.task.path |
| runtime.job.wait              | histogram | s    | messaging.destination.name (due -> started) |
| runtime.queue.depth           | gauge     | 1    | messaging.destination.name, runtime.queue.state (ready/delayed) |
| runtime.worker.rss            | gauge     | By   | runtime.worker.id                           |

Exported every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 10,000) to the OTLP endpoint of
the traces (``--otlp-endpoint`` or the ``OTEL_EXPORTER_OTLP_*`` variables), and once more
when the worker stops. Without an endpoint, nothing is measured or imported.
"""

from __future__ import annotations

import os
from typing import Any

from runtime.context import JobContext
from runtime.middleware import Middleware, WorkerView
from runtime.process import rss_reader

from .tracing import otlp_traces_url


def otlp_metrics_url(settings: Any) -> str | None:
    url = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if url:
        return url
    traces = otlp_traces_url(settings)
    return traces[: -len("/v1/traces")] + "/v1/metrics" if traces and traces.endswith("/v1/traces") else None


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
        from .tracing import export_timeout_s
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=export_timeout_s("METRICS")))
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "runtime"),
                                    "process.pid": os.getpid()})
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        meter = self.provider.get_meter("runtime")
        self.duration = meter.create_histogram("messaging.process.duration", unit="s",
                                               description="Duration of processing a job")
        self.wait = meter.create_histogram("runtime.job.wait", unit="s", description="From due to started")
        self.counts: dict[tuple[str, str, str], int] = {}
        self.attrs: dict[tuple[str, str], dict[str, str]] = {}

        def jobs(options: Any) -> list[Any]:  # counted locally (a dict increment per job)
            return [Observation(n, {"runtime.job.status": s, "messaging.destination.name": q, "runtime.task.path": p})
                    for (s, q, p), n in list(self.counts.items())]

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
        key = (status, job.queue, job.path)
        self.counts[key] = self.counts.get(key, 0) + 1
        timing = job.report.get("timing")
        if timing:
            attrs = self.attrs.get((job.queue, status))
            if attrs is None:
                attrs = self.attrs[(job.queue, status)] = {
                    "messaging.system": "runtime", "messaging.destination.name": job.queue,
                    "messaging.operation.name": "process", "runtime.job.status": status}
            self.duration.record(timing["wall_s"], attrs)
            if "wait_s" in timing:
                self.wait.record(timing["wait_s"], attrs)
