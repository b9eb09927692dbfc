"""The consumer span of a job attempt, made without the SDK's per-span machinery.

The SDK's ``Tracer.start_span`` plus ``Span.end`` cost ~18 µs a span here (a sampler
call, id generation, four locks, bounded containers, each attribute checked): most of a
traced no-op job's hooks (bench/README.md, issue 15). When runtime made the tracer
provider itself, with the default sampler and no span processor but its own export
thread (tracing.provider), the job's span is a :class:`JobSpan`: a full OpenTelemetry
``Span`` for the task's code (``trace.get_current_span()``, children, attributes,
events, exceptions, status), and a ReadableSpan by shape for the export (otlp_wire),
with the SDK's rules where they show: ParentBased(AlwaysOn) sampling, ids from
``random.getrandbits``, attribute values set by the task checked and cut as the SDK does
(BoundedAttributes, the provider's SpanLimits), events as the SDK's ``Event``, OK final.
Anywhere else (an application's provider, another sampler or processor) the SDK makes
the span.
"""

from __future__ import annotations

import random
import time
import traceback
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_SAMPLED = TraceFlags.SAMPLED
#: W3C trace context level 2's "random trace id" flag, where this API version has it
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)


class JobSpan(trace_api.Span):
    """A recording span; ``end()`` hands it to ``processor.on_end``."""

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind,
                 attributes: dict[str, Any], links: tuple[Link, ...], source: Any) -> None:
        self.name, self.context, self.parent, self.kind = name, context, parent, kind
        self._attributes: Any = attributes  # runtime's own: a plain dict until the task sets one
        self._events: list[Event] = []
        self._links = links
        self.status = Status(StatusCode.UNSET)
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self.resource, self.instrumentation_scope = source.resource, source.scope
        self._source = source
        self.dropped_events = self.dropped_links = 0

    # ---- the ReadableSpan shape (otlp_wire, tracing.interrupted) ----------------------

    @property
    def attributes(self) -> Any:
        return self._attributes

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def links(self) -> tuple[Link, ...]:
        return self._links

    @property
    def dropped_attributes(self) -> int:
        return int(getattr(self._attributes, "dropped", 0))

    # ---- the Span API ---------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Any) -> None:
        for key, value in (attributes or {}).items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is not None:
            return
        if type(self._attributes) is dict:  # the task's first: checked from now on, as the SDK does
            self._attributes = BoundedAttributes(self._source.max_attributes, self._attributes, immutable=False,
                                                 max_value_len=self._source.max_value_len)
        self._attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self.end_time is not None:
            return
        self._events.append(Event(name, BoundedAttributes(self._source.max_attributes, attributes,
                                                          max_value_len=self._source.max_value_len),
                                  timestamp if timestamp is not None else time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self.end_time is None and context is not None and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs = {"exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
                 "exception.message": str(exception), "exception.stacktrace": stack,
                 "exception.escaped": str(escaped)}
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        self._source.processor.on_end(self)


class Source:
    """What JobSpans of one tracer share: its resource and scope, the provider's limits,
    and the processor they end in."""

    def __init__(self, tracer: Any, processor: Any, limits: Any) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        self.resource = tracer.resource
        self.scope = getattr(tracer, "_instrumentation_scope", None) or InstrumentationScope("runtime")
        self.processor = processor
        self.max_attributes = getattr(limits, "max_span_attributes", 128)
        self.max_value_len = getattr(limits, "max_attribute_length", None)

    def start(self, name: str, parent: SpanContext | None, attributes: dict[str, Any],
              links: tuple[Link, ...]) -> trace_api.Span:
        """A consumer span child of ``parent`` (None: a new trace), sampled as
        ParentBased(AlwaysOn) samples: a parent's decision is kept (not sampled: a
        non-recording span in its trace)."""
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            flags = TraceFlags((_SAMPLED if parent.trace_flags & _SAMPLED else 0) | (parent.trace_flags & _RANDOM))
            if not flags.sampled:
                return trace_api.NonRecordingSpan(SpanContext(trace_id, _new_id(64), False, flags))
        else:
            parent, trace_id, flags = None, _new_id(128), TraceFlags(_SAMPLED | _RANDOM)
        ctx = SpanContext(trace_id, _new_id(64), False, flags)
        return JobSpan(name, ctx, parent, SpanKind.CONSUMER, attributes, links, self)


def _new_id(bits: int) -> int:
    """A random id of ``bits`` bits, never 0 (invalid), as the SDK's RandomIdGenerator."""
    while True:
        n = random.getrandbits(bits)
        if n:
            return n
