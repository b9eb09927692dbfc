"""The job histograms (``messaging.process.duration``, ``runtime.job.wait``), aggregated by
the worker itself and handed to OpenTelemetry's metric readers at each collection.

An SDK ``Histogram.record()`` checks and hashes its attributes on every call and offers
an exemplar: 9-15 µs a value, two values a job, about a tenth of a traced no-op job's
cost (bench/README.md, issue 15). Here a job's attribute set is a tuple the Metrics
middleware already holds, so a value costs a dict lookup, a bisect and a few additions
(~1 µs). What the readers receive is what the SDK's explicit-bucket histogram would have
made: per attribute set, cumulative bucket counts (bucket ``i`` holds values in
``(bounds[i-1], bounds[i]]``, the last one values above every bound), count, sum, min and
max since the worker started, plus one exemplar per bucket (the latest job's value, trace
and span there), which Grafana shows as a link from a bucket to a trace.

Readers get them by :func:`with_histograms`: a subclass of a reader class whose
``_receive_metrics`` (the hook every MetricReader implements) adds them to the collected
``MetricsData`` under the ``runtime`` scope. Workers run the readers' threads as
greenlets, so a collection never sees a point half-updated.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Hashable, Sequence
from typing import Any


class JobHistogram:
    """One histogram instrument: ``record(key, attributes, value, trace)`` per job."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        self.start_ns = time.time_ns()
        #: attribute set -> [attributes, count, sum, min, max, bucket counts, {bucket: exemplar}]
        self.points: dict[Hashable, list[Any]] = {}

    def record(self, key: Hashable, attributes: dict[str, str], value: float,
               trace: dict[str, str] | None = None) -> None:
        """Add ``value`` (seconds) for the attribute set ``key`` (``attributes`` are its
        exported form); ``trace`` (``{"trace_id", "span_id"}``, hex) becomes the exemplar
        of the value's bucket."""
        p = self.points.get(key)
        if p is None:
            p = self.points[key] = [attributes, 0, 0.0, value, value, [0] * (len(self.bounds) + 1), {}]
        i = bisect_left(self.bounds, value)
        p[1] += 1
        p[2] += value
        if value < p[3]:
            p[3] = value
        if value > p[4]:
            p[4] = value
        p[5][i] += 1
        if trace is not None:
            p[6][i] = (value, time.time_ns(), trace)

    def metric(self) -> Any:
        """The SDK's ``Metric`` of everything recorded so far (cumulative), or None."""
        from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram, HistogramDataPoint, Metric
        if not self.points:
            return None
        now = time.time_ns()
        points = [HistogramDataPoint(attributes=dict(p[0]), start_time_unix_nano=self.start_ns, time_unix_nano=now,
                                     count=p[1], sum=p[2], bucket_counts=list(p[5]), explicit_bounds=self.bounds,
                                     min=p[3], max=p[4], exemplars=_exemplars(p[6]))
                  for p in list(self.points.values())]
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE))


def _exemplars(kept: dict[int, tuple[float, int, dict[str, str]]]) -> list[Any]:
    from opentelemetry.sdk.metrics import Exemplar
    out = []
    for _, (value, at, trace) in sorted(kept.items()):
        try:
            out.append(Exemplar({}, value, at, int(trace["span_id"], 16), int(trace["trace_id"], 16)))
        except (KeyError, TypeError, ValueError):  # a report without usable ids
            continue
    return out


def merged(data: Any, histograms: Sequence[JobHistogram]) -> Any:
    """``data`` (an SDK ``MetricsData``) with the histograms' metrics added to its
    ``runtime`` scope (a scope of their own when it has none)."""
    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    extra = [m for m in (h.metric() for h in histograms) if m is not None]
    if not extra or not data.resource_metrics:
        return data
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for i, sm in enumerate(scopes):
        if sm.scope.name == "runtime":
            scopes[i] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *extra], schema_url=sm.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope=InstrumentationScope("runtime"), metrics=extra, schema_url=""))
    return MetricsData(resource_metrics=[ResourceMetrics(resource=first.resource, scope_metrics=scopes,
                                                         schema_url=first.schema_url), *rest])


def with_histograms(reader_cls: Any, histograms: Sequence[JobHistogram]) -> Any:
    """A subclass of the MetricReader class ``reader_cls`` whose collections include
    ``histograms``."""

    class Reader(reader_cls):  # type: ignore[misc]
        def _receive_metrics(self, metrics_data: Any, *args: Any, **kwargs: Any) -> Any:
            return super()._receive_metrics(merged(metrics_data, histograms), *args, **kwargs)

    Reader.__name__ = Reader.__qualname__ = reader_cls.__name__
    return Reader
