"""Tracing with OpenTelemetry: a producer span at enqueue, a consumer span around each job.

At enqueue (any process using runtime.Client) a PRODUCER span ``send {queue}`` is made in
the caller's current context (say, the web request that queued the job) and its W3C
``traceparent`` (and ``baggage``) is injected into the job's ``meta["trace"]``. The
worker's CONSUMER span ``process {task path}`` (``process {queue}`` with the setting
``span_name = "queue"``) continues that trace, so one trace runs from
the request to the job's own child spans, and on through jobs queued by jobs. Every
attempt (retry, requeue, interrupt) of a job is a child of the producer span, with its
baggage, and links to the attempt before it (the conventions allow the creation context
as parent for a single message): one trace holds the request and every attempt. A job
queued by an untraced producer takes its first attempt's span as the parent of the
later ones. A span the sampler left out leaves no trace ids in the report (nothing to
link to); its ids still tag the job's log lines. The job's
history entries name each attempt's trace id and error.

Names and attributes follow the OpenTelemetry messaging semantic conventions
(``messaging.system``, ``messaging.destination.name`` = queue, ``messaging.message.id``
= job id, ``messaging.operation.type``/``.name``) plus ``runtime.task.path``,
``runtime.job.attempt`` and ``runtime.job.status``. The span status is set from the
job's status also when it ended by a BaseException (timeout, abort, interrupt), which the
SDK alone leaves UNSET; the exception is recorded on the span.

Export: OTLP over http/protobuf (or gRPC with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and
``pip install opentelemetry-exporter-otlp-proto-grpc``) to ``Settings.otlp_endpoint``
(``--otlp-endpoint``) or the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``. With no endpoint nothing is traced or exported (unless
the application installed an SDK TracerProvider itself, which is then used). The
provider is made in the process that uses it (after fork in workers, never inherited),
flushed when a worker stops or recycles. Under gevent the SDK's BatchSpanProcessor would
run on the hub (its thread is a greenlet there): encoding a batch stalls every running
greenlet (64-span batches, measured: loop lag p99 5 ms, max 16-24 ms), and a
CPU-bound job starves it (90 % of spans dropped). So in a gevent-patched process spans are
handed to :class:`NativeExportProcessor`, which batches and exports them from a real OS
thread with its own hub; the interpreter's GIL switch interval is lowered to
SWITCH_INTERVAL_S so that the thread's encoding cannot hold a running greenlet for more
than about that long. Elsewhere the SDK's BatchSpanProcessor is used. Attribute values are
cut at ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (default here 8,192 characters), a job's
``exception.stacktrace`` from its front (stack_tail). opentelemetry is imported only when
tracing is on.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from runtime.context import JobContext
from runtime.job import Job
from runtime.middleware import Middleware, Rows
from runtime.redact import mask
from runtime.status import Status

from .otlp import (
    EXPORT_BATCH,
    EXPORT_DELAY_S,
    EXPORT_QUEUE,
    SWITCH_INTERVAL_S,
    NativeExportProcessor,
    attribute_length,
    export_timeout_s,
    otlp_traces_url,
    quiet_failures,
    resource_attributes,
    use_native_span_locks,
)
from .otlp_wire import wire_encoded

log = logging.getLogger("runtime.tracing")

_provider: Any = None   # the provider made by this process (pid-checked), or None
_provider_pid: int | None = None
#: (its NativeExportProcessor, its SpanLimits, the provider) when that provider is ours
_native: Any = None


def provider(settings: Any, worker: Any = None) -> Any:
    """The TracerProvider for ``settings``: with an endpoint configured, this process's
    own, made on first use (again after a fork; one per process, as OpenTelemetry's global
    provider is set once; ``worker`` names the worker in its resource); without one, the
    application's own SDK provider, else None."""
    global _provider, _provider_pid
    url = otlp_traces_url(settings)
    ours = _provider if _provider_pid == os.getpid() else None
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    if not url:
        current = trace.get_tracer_provider()
        return current if isinstance(current, TracerProvider) and current is not _provider else None
    if ours is not None:
        return ours
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        except ImportError:
            from runtime.errors import ConfigError
            raise ConfigError("OTLP over gRPC needs: pip install opentelemetry-exporter-otlp-proto-grpc") from None
        endpoint = getattr(settings, "otlp_endpoint", None) or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        exporter: Any = quiet_failures(Grpc, "traces")(endpoint=endpoint)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = quiet_failures(wire_encoded(OTLPSpanExporter), "traces")(endpoint=url,
                                                                             timeout=export_timeout_s("TRACES"))
    limit = attribute_length()
    # the cut is ours and expected (a traceback is longer): the SDK's warning for each one
    # would otherwise land in the logs of the job whose span it is
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)
    limits = SpanLimits(max_attribute_length=limit)
    prov = TracerProvider(resource=Resource.create(resource_attributes(worker)), span_limits=limits)
    from gevent import monkey
    global _native
    if monkey.is_module_patched("threading"):  # a worker: export from a native thread
        import sys
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        use_native_span_locks()
        _native = (NativeExportProcessor(exporter), limits, prov)
        prov.add_span_processor(_native[0])  # a SpanProcessor by shape
    else:
        prov.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=EXPORT_QUEUE,
                                                   schedule_delay_millis=int(EXPORT_DELAY_S * 1000),
                                                   max_export_batch_size=EXPORT_BATCH))
    _provider, _provider_pid = prov, os.getpid()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(prov)  # so tasks' trace.get_tracer() spans join the job's trace
    log.info("tracing: exporting spans over OTLP (%s) to %s", protocol, mask(url))
    return prov


def stack_tail(exc: BaseException) -> str:
    """``exc``'s traceback as ``exception.stacktrace``: whole when it fits the attribute
    length limit, else cut from the front with a marker, so that the exception line and
    the innermost frames (where it was raised) always arrive. The SDK cuts any longer
    value from the end, which loses exactly those."""
    from runtime.execution import format_traceback
    text = format_traceback(exc)
    limit = attribute_length()
    if len(text) <= limit:
        return text
    marker = f"[{len(text) - limit} characters of outer frames cut]\n"
    return marker + text[len(text) - limit + len(marker):]


def flush(timeout_s: float = 5.0) -> None:
    """Export what this process's provider holds (worker stop, recycle)."""
    if _provider is not None and _provider_pid == os.getpid():
        _provider.force_flush(int(timeout_s * 1000))


class _Otel:
    """The opentelemetry names the hooks use, imported once tracing is on."""

    def load(self) -> None:
        from opentelemetry import baggage, context, propagate, trace
        from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
        self.baggage, self.context, self.propagate, self.trace = baggage, context, propagate, trace
        self.Link, self.SpanContext, self.SpanKind = Link, SpanContext, SpanKind
        self.StatusCode, self.TraceFlags, self.NonRecordingSpan = StatusCode, TraceFlags, NonRecordingSpan
        self.w3c = _w3c_only(propagate)


def _w3c_only(propagate: Any) -> bool:
    """Is the global propagator the SDK's default (W3C trace context and baggage)? Then a
    job's carrier can be read by :func:`_extract`."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    kinds = [type(p) for p in getattr(propagate.get_global_textmap(), "_propagators", [None])]
    return kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator]


def _extract(carrier: dict[str, str]) -> Any:
    """The context a job's ``meta["trace"]`` carries, as ``propagate.extract`` makes it
    with the default propagators, in a quarter of its time: the ``traceparent`` read here
    (version 00, the W3C format ``00-{trace id}-{span id}-{flags}``), the baggage, and
    anything else (a tracestate, another version) by ``propagate.extract`` itself."""
    o = _otel
    tp = carrier.get("traceparent")
    if not o.w3c or tp is None or len(tp) != 55 or not tp.startswith("00-") or "tracestate" in carrier:
        return o.propagate.extract(carrier)
    try:
        trace_id, span_id, flags = int(tp[3:35], 16), int(tp[36:52], 16), int(tp[53:55], 16)
    except ValueError:
        return o.propagate.extract(carrier)
    if not trace_id or not span_id or tp[35] != "-" or tp[52] != "-":
        return o.propagate.extract(carrier)
    ctx = None
    if "baggage" in carrier:
        ctx = o.propagate.get_global_textmap()._propagators[1].extract(carrier)
    sc = o.SpanContext(trace_id, span_id, True, o.TraceFlags(flags))
    return o.trace.set_span_in_context(o.NonRecordingSpan(sc), ctx)


def _job_spans(prov: Any, tracer: Any) -> Any:
    """A jobspan.Source for ``tracer`` when ``prov`` is this process's own provider with
    its export thread (job spans then skip the SDK, see diagnostics.jobspan), else None."""
    if _native is None or prov is not _native[2] or _provider_pid != os.getpid() or not _only_ours(_native):
        return None
    from .jobspan import Source
    return Source(tracer, _native[0], _native[1])


def _only_ours(native: Any) -> bool:
    """Does the provider still end spans in our processor alone? (an application may add
    one to the global provider, which is then ours: its spans must reach it)"""
    held = getattr(getattr(native[2], "_active_span_processor", None), "_span_processors", None)
    return held is not None and len(held) == 1 and held[0] is native[0]


def _fill(span: Any, attrs: dict[str, Any]) -> None:
    """Set ``attrs`` (runtime's own: short strings and numbers, valid by construction) on an
    SDK span: straight into its attribute dict where the SDK keeps one (the SDK's
    checks of each value were a quarter of a traced job's hooks), else set_attributes."""
    held = getattr(span, "_attributes", None)
    d = held if type(held) is dict else getattr(held, "_dict", None)  # a JobSpan's own, or the SDK's
    if type(d) is dict and len(d) + len(attrs) <= (getattr(held, "maxlen", None) or 128):
        d.update(attrs)
    else:
        span.set_attributes(attrs)


_otel: Any = _Otel()

#: The SDK's default sampler, which decides on the parent span alone.
_DEFAULT_SAMPLER = ("ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,"
                    "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
                    "localParentNotSampled:AlwaysOffSampler}")

_FAILED = {Status.FAILED, Status.TIMEOUT, Status.ABORT, Status.MAXRETRIES, Status.RETRY, Status.INTERRUPT}


def _wait(job: JobContext) -> dict[str, Any]:
    """``runtime.job.wait_s``: the job's wait (due to started, seconds), when known, and
    ``runtime.job.wait_reason`` when it waited in the worker after its claim ("busy":
    every greenlet taken; "exclusive": a job that runs alone held the pool, or the pool
    drained for this one). A retry's delay is not part of its wait (it is due after it):
    the attempt's span links to the one before, and the gap between them is the delay."""
    wait = job.wait_s
    out: dict[str, Any] = {} if wait is None else {"runtime.job.wait_s": wait}
    if job.wait_reason is not None:
        out["runtime.job.wait_reason"] = job.wait_reason
    return out


class Tracing(Middleware):
    """Producer and consumer spans with W3C context propagation through the job."""

    report_keys = ("trace",)

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._tracer: Any = None
        self._pid: int | None = None
        #: job id -> its producer span, between before_enqueue and after_enqueue
        self._sending: dict[str, Any] = {}
        self._default_sampler = False
        self._source: Any = None  # a jobspan.Source where job spans may skip the SDK (_job_spans)

    def tracer(self, worker: Any = None) -> Any:
        """The tracer of this process, or None when tracing is off (checked once per pid)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            if otlp_traces_url(self.settings) is None and "opentelemetry" not in __import__("sys").modules:
                self._tracer = None  # not configured, and the app uses no OTel: stay off, import nothing
            else:
                prov = provider(self.settings, worker)
                self._tracer = prov.get_tracer("runtime") if prov is not None else None
                if self._tracer is not None:
                    _otel.load()
                    sampler = getattr(self._tracer, "sampler", None)
                    self._default_sampler = getattr(sampler, "get_description", str)() == _DEFAULT_SAMPLER
                    self._source = _job_spans(prov, self._tracer) if self._default_sampler else None
        return self._tracer

    def on_worker_start(self, worker: Any) -> None:
        self._pid = None  # after fork: make this process's own provider
        self.tracer(worker)

    def applies(self, path: str) -> bool:
        return self.tracer() is not None

    def on_worker_stop(self, worker: Any) -> None:
        flush()

    def before_enqueue(self, message: Any) -> None:
        """Start the PRODUCER span ``send {queue}`` (ended by after_enqueue, once Redis
        took the job or refused it) and put its context in ``message.meta["trace"]``."""
        tracer = self.tracer()
        if tracer is None:
            return
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind
        span = tracer.start_span(
            f"send {message.queue}", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "runtime", "messaging.destination.name": message.queue,
                        "messaging.operation.type": "send", "messaging.operation.name": "send",
                        "messaging.message.id": message.id, "runtime.task.path": message.path})
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))  # with the caller's baggage
        message.meta["trace"] = carrier
        self._sending[message.id] = span

    def after_enqueue(self, messages: Any, error: BaseException | None) -> None:
        from opentelemetry.trace import StatusCode
        for message in messages:
            span = self._sending.pop(message.id, None)
            if span is None:
                continue
            if error is not None:
                span.record_exception(error)
                span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
            span.end()

    def before_job(self, job: JobContext) -> None:
        tracer = self.tracer()
        if tracer is None:
            return
        context, trace = _otel.context, _otel.trace
        Link, SpanContext, SpanKind, TraceFlags = _otel.Link, _otel.SpanContext, _otel.SpanKind, _otel.TraceFlags
        # every attempt continues the producer's trace (its baggage too), the conventions'
        # creation context as parent; a later one links to the attempt before it
        carrier = job.meta.get("trace")
        parent = _extract(carrier) if carrier else None  # None: the job greenlet's own context
        links = []
        prev = job.meta.get("trace_prev")
        if prev and job.attempt > 1:
            links.append(Link(SpanContext(int(prev["trace_id"], 16), int(prev["span_id"], 16), True,
                                          TraceFlags(TraceFlags.SAMPLED)), {"runtime.link": "previous attempt"}))
        by_queue = getattr(self.settings, "span_name", "task") == "queue"
        attrs = {"messaging.system": "runtime", "messaging.destination.name": job.queue,
                 "messaging.operation.type": "process", "messaging.operation.name": "process",
                 "messaging.message.id": job.job_id, "runtime.task.path": job.path,
                 "runtime.job.attempt": job.attempt, **_wait(job)}
        name = f"process {job.queue if by_queue else job.path}"
        source = self._source
        if source is not None and _only_ours(_native):
            span = source.start(name, trace.get_current_span(parent).get_span_context(), attrs, tuple(links))
        elif self._default_sampler:  # it decides on the parent alone: the attributes can come after
            span = tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, links=links)
            _fill(span, attrs)
        else:
            span = tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attrs)
        token = context.attach(trace.set_span_in_context(span, parent))
        sc = span.get_span_context()
        ids = {"trace_id": format(sc.trace_id, "032x"), "span_id": format(sc.span_id, "016x")}
        if sc.trace_flags.sampled:  # a trace the sampler left out is nowhere to link to
            job.report["trace"] = ids
        job.state["tracing"] = (span, token)
        if not carrier:  # the producer traced nothing: a next attempt joins this one's trace
            job.state["tracing_root"] = f"00-{ids['trace_id']}-{ids['span_id']}-{int(sc.trace_flags):02x}"
        job.log_fields["trace_id"] = ids["trace_id"]
        job.log_fields["span_id"] = ids["span_id"]

    def after_job(self, job: JobContext, outcome: Any) -> None:
        span, token = job.state.pop("tracing", (None, None))
        if span is None:
            return
        context, StatusCode = _otel.context, _otel.StatusCode
        status = outcome.status
        _fill(span, {"runtime.job.status": status.value})
        if outcome.exc is not None and status != Status.SUCCESS:
            span.record_exception(outcome.exc, {"exception.stacktrace": stack_tail(outcome.exc)}, escaped=True)
        if status in _FAILED:
            span.set_status(StatusCode.ERROR, f"{status.value}: {type(outcome.exc).__name__ if outcome.exc else ''}")
        else:
            span.set_status(StatusCode.OK)
        span.end()
        context.detach(token)
        root = job.state.pop("tracing_root", None)
        if status in (Status.RETRY, Status.INTERRUPT) and "trace" in job.report:  # the next attempt links here
            job.set_meta("trace_prev", job.report["trace"])
            if root is not None:
                job.set_meta("trace", {"traceparent": root})

    def describe(self, job: Job) -> Rows:
        ids = (job.report or {}).get("trace")
        if not ids:
            return []
        link = getattr(self.settings, "trace_link", None)
        return [("trace", ids["trace_id"] + (f"  {link.format(trace_id=ids['trace_id'])}" if link else ""))]
