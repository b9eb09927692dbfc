"""OpenTelemetry metrics of a worker, exported over OTLP like the traces.

Instruments (names from the OTel messaging conventions where they exist):

| name                       | kind      | unit | attributes                                       |
|----------------------------|-----------|------|--------------------------------------------------|
| messaging.process.duration | histogram | s    | JOB_ATTRIBUTES (wall time of the attempt)        |
| runtime.job.wait           | histogram | s    | JOB_ATTRIBUTES (due -> started)                  |
| runtime.jobs               | counter   | 1    | JOB_ATTRIBUTES (attempts ended)                  |
| runtime.queue.depth        | gauge     | 1    | messaging.destination.name, runtime.queue.state (ready/delayed) |
| runtime.worker.rss         | gauge     | By   | runtime.worker.id                                |
| runtime.schedule.late      | gauge     | s    | runtime.schedule.name, runtime.schedule.status   |
| runtime.cap.jobs           | gauge     | 1    | runtime.cap.name, runtime.cap.state (running/parked) |
| runtime.queue.latency      | gauge     | s    | messaging.destination.name (age of the next job) |

JOB_ATTRIBUTES: ``messaging.system`` ("runtime"), ``messaging.destination.name`` (the
queue), ``messaging.operation.name`` ("process"), ``runtime.task.path``,
``runtime.job.status`` and, for an attempt that did not succeed, ``error.type`` (the
exception's qualified class name, else the status). Histograms use SECONDS_BUCKETS, the
bucket boundaries the messaging conventions advise for durations in seconds, extended to
an hour for long jobs (the SDK's default boundaries are milliseconds: every job under 5 s
would fall in one bucket). The two histograms are aggregated by the worker
(diagnostics.histograms: cumulative, with one exemplar per bucket linking it to the
trace of a job there), at a tenth of the SDK instrument's cost per job.

Exported every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 10,000) to the OTLP endpoint of
the traces (``--otlp-endpoint`` or the ``OTEL_EXPORTER_OTLP_*`` variables), and once more
when the worker stops; ``OTEL_METRICS_EXPORTER=none`` turns them off (as a backend that
takes traces only, like Jaeger, wants). A failing export is logged once per outage, and
its end once. With ``metrics_port`` (``--metrics-port``) the worker also serves them for
Prometheus to scrape (with ``--processes N``, worker process ``i`` of the supervisor on
port ``metrics_port + i``: list them all as targets; a recycling process closes its port
and its replacement serves on it) (OpenTelemetry's Prometheus exporter: ``messaging_process_duration_seconds``,
``runtime_jobs_total``...). With neither, nothing is measured or imported.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from runtime.context import JobContext
from runtime.execution import exc_type_name
from runtime.middleware import Middleware, WorkerView
from runtime.process import rss_reader, worker_slot

from .histograms import JobHistogram, with_histograms
from .otlp import export_timeout_s, exporter_off, otlp_endpoint, quiet_failures, resource_attributes

log = logging.getLogger("runtime.metrics")

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


def schedule_lateness(worker: Any) -> Any:
    """The callback of gauge runtime.schedule.late: per schedule (runtime.schedule.name,
    runtime.schedule.status), the seconds past a fire time not fired beyond its grace; a
    scheduler that stops firing (wedged, or no worker runs it) shows here."""
    from opentelemetry.metrics import Observation

    def late(options: Any) -> list[Any]:
        broker = getattr(worker, "broker", None)
        if broker is None:
            return []
        from runtime.scheduler.report import describe
        from runtime.scheduler.state import ScheduleState
        try:
            rows = describe(ScheduleState(broker))["schedules"]
        except Exception:  # noqa: BLE001 - a metric must not break the export
            return []
        return [Observation(r["late_s"], {"runtime.schedule.name": r["name"], "runtime.schedule.status": r["status"]})
                for r in rows]

    return late


def latency(worker: Any) -> Any:
    """The callback of gauge runtime.queue.latency: per queue of the worker
    (messaging.destination.name), the age in seconds of the job it would run next, the
    signal ``--processes MIN:MAX`` scales on (runtime.supervisor.autoscale)."""
    from opentelemetry.metrics import Observation

    def ages(options: Any) -> list[Any]:
        broker = getattr(worker, "broker", None)
        if broker is None:
            return []
        from runtime.supervisor.autoscale import queue_latency
        try:
            found = queue_latency(broker.redis, broker.keys, worker.settings.queues)
        except Exception:  # noqa: BLE001 - a metric must not break the export
            return []
        return [Observation(age, {"messaging.destination.name": q}) for q, age in found.items()]

    return ages


def cap_jobs(worker: Any) -> Any:
    """The callback of gauge runtime.cap.jobs: per cap (runtime.cap.name) and
    runtime.cap.state (running, parked), from runtime.caps.cap_counts."""
    from opentelemetry.metrics import Observation

    def jobs(options: Any) -> list[Any]:
        broker = getattr(worker, "broker", None)
        if broker is None:
            return []
        from runtime.caps import cap_counts
        try:
            caps = cap_counts(broker.redis, broker.keys)
        except Exception:  # noqa: BLE001 - a metric must not break the export
            return []
        return [Observation(c[state], {"runtime.cap.name": name, "runtime.cap.state": state})
                for name, c in caps.items() for state in ("running", "parked")]

    return jobs


def error_type(outcome: Any) -> str | None:
    """``error.type`` of an ended attempt: None for a success, else the exception's
    qualified class name (without ``builtins.``), else the status."""
    if outcome.status.value == "success":
        return None
    return str(outcome.status.value) if outcome.exc is None else exc_type_name(outcome.exc)


class Metrics(Middleware):
    """Counts, durations and waits of jobs; queue depth and worker RSS, over OTLP."""

    runs_before = ("diagnostics.timing.Timing",)  # its after-hook reads the timing Timing reports

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.provider: Any = None
        self.worker: Any = None
        self.http: Any = None  # the Prometheus endpoint's (server, thread)

    def on_worker_start(self, worker: WorkerView | None) -> None:
        url = otlp_metrics_url(self.settings)
        port = int(getattr(self.settings, "metrics_port", 0) or 0)
        port = port + worker_slot() if port else 0  # one port per process of a supervisor
        if not (url or port) or worker is None:
            return
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        self.worker = worker
        self.duration = JobHistogram("messaging.process.duration", "s", "Duration of processing a job", SECONDS_BUCKETS)
        self.wait = JobHistogram("runtime.job.wait", "s", "From due to started", SECONDS_BUCKETS)
        hists = (self.duration, self.wait)
        readers = [self._otlp_reader(url, hists)] if url else []
        prometheus = self._prometheus_reader(port, hists) if port else None
        if prometheus is not None:
            readers.append(prometheus)
        if not readers:
            return
        self.provider = MeterProvider(metric_readers=readers, resource=Resource.create(resource_attributes(worker)))
        meter = self.provider.get_meter("runtime")
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
        meter.create_observable_gauge("runtime.queue.latency", [latency(worker)], unit="s",
                                      description="Age of the job each queue would run next (autoscaling signal)")
        meter.create_observable_gauge("runtime.cap.jobs", [cap_jobs(worker)], unit="1",
                                      description="Jobs holding a slot of a concurrency cap, or parked waiting for one")
        meter.create_observable_gauge("runtime.schedule.late", [schedule_lateness(worker)], unit="s",
                                      description="Seconds a schedule's fire time is overdue past its grace "
                                                  "(0: firing on time; runtime.scheduler.report)")

    @staticmethod
    def _otlp_reader(url: str, hists: tuple[JobHistogram, ...]) -> Any:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        exporter = quiet_failures(OTLPMetricExporter, "metrics")(endpoint=url, timeout=export_timeout_s("METRICS"))
        return with_histograms(PeriodicExportingMetricReader, hists)(exporter)

    def _prometheus_reader(self, port: int, hists: tuple[JobHistogram, ...]) -> Any:
        """OpenTelemetry's Prometheus reader, served at http://HOST:PORT/metrics
        (``metrics_host``, default 127.0.0.1) by prometheus_client's HTTP server; None (one
        error line) when the port cannot be bound, as while the process this one replaces
        (a recycle) still holds it. Raises ConfigError without the package."""
        from runtime.errors import ConfigError
        try:
            import prometheus_client
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError:
            raise ConfigError("--metrics-port needs: pip install opentelemetry-exporter-prometheus") from None
        host = getattr(self.settings, "metrics_host", "127.0.0.1")
        try:
            self.http = prometheus_client.start_http_server(port, addr=host)
        except OSError as exc:
            log.error("metrics for Prometheus not served: cannot bind %s:%d (%s)", host, port, exc.strerror or exc)
            return None
        log.info("metrics for Prometheus at http://%s:%d/metrics", host, port)
        return with_histograms(PrometheusMetricReader, hists)()

    def on_worker_recycle(self, worker: WorkerView | None) -> None:
        """Close the Prometheus endpoint: the replacement serves on the same port (the
        same supervisor slot) from its start."""
        self._close_http()

    def _close_http(self) -> None:
        if self.http is not None:  # (server, thread) of prometheus_client
            self.http[0].shutdown()
            self.http[0].server_close()
            self.http = None

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        if self.provider is not None:
            self.provider.force_flush(5000)
            self.provider.shutdown()
            self.provider = None
        self._close_http()

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
            trace = job.report.get("trace")
            self.duration.record(key, attrs, timing["wall_s"], trace)
            if "wait_s" in timing:
                self.wait.record(key, attrs, timing["wait_s"], trace)
