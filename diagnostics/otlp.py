"""OTLP export for the job spans and metrics: endpoints and switches from settings and the
standard ``OTEL_*`` variables, the resource, a span processor that exports from a native
thread under gevent, and failed exports logged once per outage (see diagnostics.tracing
for why a native thread)."""

from __future__ import annotations

import collections
import logging
import os
import sys
from typing import Any

from runtime.errors import JobAborted, JobInterrupt, JobTimeout
from runtime.execution import exc_type_name
from runtime.redact import mask

log = logging.getLogger("runtime.tracing")

#: Span export tuning (see module docstring): spans per OTLP request, seconds between
#: exports, spans kept waiting at most (more are dropped and counted).
EXPORT_BATCH = 512
EXPORT_DELAY_S = 0.5
EXPORT_QUEUE = 8192
#: Longest attribute value, characters, unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT says:
#: long enough for a whole 40-frame Python traceback (about 6,000).
ATTRIBUTE_LENGTH = 8192
def attribute_length() -> int:
    """The span attribute value limit, characters (see ATTRIBUTE_LENGTH)."""
    try:
        return max(64, int(os.environ.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", ATTRIBUTE_LENGTH)))
    except ValueError:
        return ATTRIBUTE_LENGTH


#: Longest one OTLP export (retries included) may take, seconds, unless the standard
#: OTEL_EXPORTER_OTLP_TIMEOUT says otherwise: the SDK's default of 10 s, for traces and
#: then metrics, held a stopping worker 13-22 s past its grace period with the collector down.
EXPORT_TIMEOUT_S = 3.0


def export_timeout_s(signal: str) -> float | None:
    """The exporters' ``timeout``: None (the SDK reads the OTEL_* variable) when
    OTEL_EXPORTER_OTLP_{signal}_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT is set, else
    EXPORT_TIMEOUT_S. ``signal``: "TRACES" or "METRICS"."""
    if os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT") or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
        return None
    return EXPORT_TIMEOUT_S


#: GIL switch interval in a gevent worker that exports spans, seconds (CPython's default
#: is 0.005): the longest the export thread holds the interpreter while a greenlet waits.
SWITCH_INTERVAL_S = 0.001


#: Modules of the OpenTelemetry SDK that make a ``threading.Lock()`` for every span (the
#: span, its attributes, its events and links: four per span).
_PER_SPAN_LOCKS = ("opentelemetry.sdk.trace", "opentelemetry.attributes", "opentelemetry.sdk.util")


class _NativeLock:
    """Stands for the ``threading`` module inside _PER_SPAN_LOCKS: ``Lock`` is the native
    lock, everything else the (patched) module's own."""

    def __init__(self, real: Any) -> None:
        from gevent import monkey
        self._real = real
        self.Lock = monkey.get_original("threading", "Lock")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def use_native_span_locks() -> int:
    """In a gevent-patched process, give the SDK's per-span locks the native lock type.

    Patched, ``threading.Lock`` is gevent's lock, a Python object: creating the four locks
    of each span cost 9 µs per job (cProfile of the Tracing hooks), the largest single cost
    of a traced job after attribute checks. Those locks guard a few dict and list updates
    of one span, with no I/O and so no greenlet switch while held, so a greenlet can never
    wait on one held by another greenlet, and a native lock is safe (and ~0.1 µs). Returns
    how many modules were switched (0 where the SDK's layout changed: nothing breaks).
    """
    import sys
    import types
    n = 0
    for name in _PER_SPAN_LOCKS:
        mod = sys.modules.get(name) or __import__(name, fromlist=["_"])
        if isinstance(getattr(mod, "threading", None), types.ModuleType):
            mod.threading = _NativeLock(mod.threading)  # type: ignore[attr-defined]
            n += 1
    return n


#: What runtime delivers into a running job; OpenTelemetry records only Exceptions, so a
#: span these end would be exported UNSET, with no event.
_INTERRUPTS = (JobTimeout, JobAborted, JobInterrupt)


def interrupted(span: Any, exc: BaseException) -> Any:
    """``span`` (an ended ReadableSpan), when ``exc`` (a timeout, abort or interrupt of the
    job) ended it and it has no status yet: a copy with status ERROR and the ``exception``
    event; else ``span`` itself."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status, StatusCode
    if span.status.status_code is not StatusCode.UNSET:
        return span
    kind = type(exc).__name__
    event = Event("exception", {"exception.type": exc_type_name(exc), "exception.message": str(exc),
                                "exception.escaped": "True"}, timestamp=span.end_time)
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, events=(*span.events, event), links=span.links, kind=span.kind,
                        status=Status(StatusCode.ERROR, f"{kind}: {exc}"), start_time=span.start_time,
                        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


class NativeExportProcessor:
    """An OpenTelemetry SpanProcessor that exports from a native OS thread.

    ``on_end`` (any greenlet) encodes the span (diagnostics.otlp_wire, when the exporter
    posts encoded spans; else it keeps the span) and appends it to a deque; a real thread (gevent's
    original ``start_new_thread``) wakes every ``delay_s`` seconds, or when asked to
    flush, and exports what waits, ``batch`` spans per request, through ``exporter``.
    Every export runs on that thread: the exporter's kept-alive HTTP connection belongs
    to the thread's own gevent hub, and using it from another thread's fails ("Cannot
    switch to a different thread"). ``force_flush`` and ``shutdown`` wake the thread and
    wait for it (up to their timeout). Over ``max_queue``
    waiting spans, new ones are dropped and counted in ``dropped``.
    """

    def __init__(self, exporter: Any, batch: int = EXPORT_BATCH, delay_s: float = EXPORT_DELAY_S,
                 max_queue: int = EXPORT_QUEUE) -> None:
        from gevent import monkey
        self.exporter, self.batch, self.delay_s, self.max_queue = exporter, batch, delay_s, max_queue
        self.dropped = 0
        self._queue: Any = collections.deque()
        self._sleep = monkey.get_original("time", "sleep")
        self._wake = monkey.get_original("_thread", "allocate_lock")()
        self._wake.acquire()  # held: the thread waits on it, a flush releases it
        self._requested = self._done = 0  # flushes asked for, and the last one done
        self._stopped = False
        #: spans encoded at their end (otlp_wire), when the exporter posts encoded spans:
        #: (id(resource), id(scope)) -> (resource, scope, deque of Span message bodies)
        self._groups: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._added = self._taken = 0  # encoded spans queued (by on_end), and exported
        self._encode: Any = None
        if callable(getattr(exporter, "export_encoded", None)) and exporter.posts_encoded():
            from .otlp_wire import span
            self._encode = span
        monkey.get_original("_thread", "start_new_thread")(self._loop, ())

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def _on_ending(self, span: Any) -> None:  # the SDK calls it before on_end
        pass

    def on_end(self, span: Any) -> None:
        if not span.context.trace_flags.sampled:
            return
        exc = sys.exc_info()[1]  # a span ended by an exception on its way out of it
        if exc is not None and isinstance(exc, _INTERRUPTS):
            span = interrupted(span, exc)
        if len(self._queue) + self._added - self._taken >= self.max_queue:
            self.dropped += 1
            return
        if self._encode is not None:
            try:
                body = self._encode(span)
            except TypeError:  # a value OTLP cannot encode: the SDK's exporter drops it
                pass
            else:
                res, scope = span.resource, span.instrumentation_scope or None
                group = self._groups.get((id(res), id(scope)))
                if group is None:
                    group = self._groups[(id(res), id(scope))] = (res, scope, collections.deque())
                group[2].append(body)
                self._added += 1
                return
        self._queue.append(span)

    def _loop(self) -> None:
        while True:
            self._wake.acquire(True, self.delay_s)
            requested, stopped = self._requested, self._stopped
            try:
                self._export_waiting()
            except Exception:  # noqa: BLE001 - the thread must outlive any one export
                log.exception("span export failed")
            self._done = requested
            if stopped:
                try:
                    self.exporter.shutdown()
                finally:
                    self._done = -1  # the thread is gone: later flushes return at once
                return

    def _export_encoded(self) -> None:
        while True:
            batch, n = [], 0
            for res, scope, q in list(self._groups.values()):
                bodies = [q.popleft() for _ in range(min(len(q), self.batch - n))]
                if bodies:
                    batch.append((res, scope, bodies))
                    n += len(bodies)
            if not n:
                return
            self._taken += n
            try:
                self.exporter.export_encoded(batch)
            except Exception as exc:  # noqa: BLE001 - the exporter logs; keep going
                log.warning("span export failed: %s", exc)

    def _export_waiting(self) -> None:
        self._export_encoded()
        q = self._queue
        while q:
            spans = [q.popleft() for _ in range(min(self.batch, len(q)))]
            try:
                self.exporter.export(spans)
            except Exception as exc:  # noqa: BLE001 - the exporter logs; keep going
                log.warning("span export failed: %s", exc)
        if self.dropped:
            log.warning("tracing: %d spans dropped (more than %d waiting for export)", self.dropped, self.max_queue)
            self.dropped = 0

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Have the thread export what waits now; True once it did, False after
        ``timeout_millis`` (or when the processor was shut down). The caller's greenlet
        waits, its hub runs on (the receiving end may be one of its greenlets)."""
        import time

        import gevent
        pause = self._sleep if gevent.getcurrent() is gevent.get_hub() else gevent.sleep
        if self._done < 0:
            return False
        self._requested += 1
        target = self._requested
        try:
            self._wake.release()
        except RuntimeError:  # already released: the thread is about to run
            pass
        deadline = time.monotonic() + timeout_millis / 1000
        while 0 <= self._done < target and time.monotonic() < deadline:
            pause(0.002)
        return self._done >= target

    def shutdown(self) -> None:
        self._stopped = True
        self.force_flush(30000)


def exporter_off(signal: str) -> bool:
    """True when ``OTEL_{signal}_EXPORTER`` (signal "TRACES" or "METRICS") is ``none``:
    the OpenTelemetry SDK's switch for one signal, honoured with any endpoint."""
    return os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none"


def otlp_endpoint(settings: Any) -> str | None:
    """The OTLP/HTTP traces URL from settings or the standard env vars, or None."""
    explicit: str | None = getattr(settings, "otlp_endpoint", None)
    if explicit:
        return explicit if explicit.rstrip("/").endswith("/v1/traces") else explicit.rstrip("/") + "/v1/traces"
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if url:
        return url
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def otlp_traces_url(settings: Any) -> str | None:
    """otlp_endpoint(settings), or None when OTEL_TRACES_EXPORTER=none."""
    return None if exporter_off("TRACES") else otlp_endpoint(settings)


def resource_attributes(worker: Any = None) -> dict[str, Any]:
    """The OTel resource of this process's exports: ``service.name`` (OTEL_SERVICE_NAME,
    default "runtime"), ``service.version`` (runtime's, unless OTEL_RESOURCE_ATTRIBUTES
    sets one), ``host.name``, ``process.pid`` and, in a worker, ``runtime.worker.id``."""
    import socket
    from importlib.metadata import PackageNotFoundError, version
    attrs: dict[str, Any] = {"service.name": os.environ.get("OTEL_SERVICE_NAME", "runtime"),
                             "host.name": socket.gethostname(), "process.pid": os.getpid()}
    if "service.version=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        try:
            attrs["service.version"] = version("runtime")
        except PackageNotFoundError:  # run from a source tree
            pass
    if worker is not None:
        attrs["runtime.worker.id"] = worker.id
    return attrs


#: Signals ("traces", "metrics") whose last export failed.
_failing: set[str] = set()
#: The logger of the OTLP exporters' own error lines (muted while an export fails).
_EXPORTER_LOGGER = "opentelemetry.exporter"


def note_export(what: str, ok: bool, url: str | None) -> None:
    """Log a failing export once per outage, and its recovery once.

    The exporters log every failed attempt (one or more lines per export interval): the
    first attempt's lines pass, with their cause; then the ``opentelemetry.exporter``
    loggers are muted until every signal exports again."""
    muted = logging.getLogger(_EXPORTER_LOGGER)
    if ok:
        if what in _failing:
            _failing.discard(what)
            log.warning("%s export to %s recovered", what, mask(url or ""))
            if not _failing:
                muted.setLevel(logging.NOTSET)
    elif what not in _failing:
        _failing.add(what)
        log.error("%s export to %s failed; not logged again until it recovers", what, mask(url or ""))
        muted.setLevel(logging.CRITICAL)


def quiet_failures(cls: Any, what: str) -> Any:
    """A subclass of the OTLP exporter class ``cls`` whose exports report to note_export."""

    class Quiet(cls):  # type: ignore[misc]
        def _noted(self, result: Any) -> Any:
            note_export(what, getattr(result, "name", "") == "SUCCESS", getattr(self, "_endpoint", None))
            return result

        def export(self, *args: Any, **kwargs: Any) -> Any:
            return self._noted(super().export(*args, **kwargs))

        def export_encoded(self, *args: Any, **kwargs: Any) -> Any:  # otlp_wire.wire_encoded's
            return self._noted(super().export_encoded(*args, **kwargs))

    Quiet.__name__ = Quiet.__qualname__ = cls.__name__
    return Quiet
