"""Spans exported as the collector expects them: runtime's own OTLP encoding writes the
very bytes of the SDK's encoder, for job spans and for whatever a task's own code makes."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from diagnostics.otlp_wire import encode_spans


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def ended(limits: SpanLimits | None = None, **resource) -> tuple[TracerProvider, Kept]:
    kept = Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "t", **resource}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider, kept


def test_job_spans_and_user_spans_encode_to_the_sdk_bytes():
    provider, kept = ended(**{"host.name": "h", "n": 3})
    t = provider.get_tracer("runtime")
    for i in range(300):  # job spans: more than the encoder's per-key cache of distinct values
        s = t.start_span("process tasks.noop", kind=SpanKind.CONSUMER, attributes={
            "messaging.system": "runtime", "messaging.destination.name": f"q{i % 3}", "messaging.message.id": f"id{i}",
            "runtime.job.attempt": 1 + i % 2, "runtime.job.wait_s": 0.001 * i})
        s.set_attribute("runtime.job.status", "success")
        s.set_status(StatusCode.OK)
        s.end()
    first = kept.spans[0].context
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED), TraceState([("k", "v"), ("a", "b")]))
    s = t.start_span("everything", context=set_span_in_context(NonRecordingSpan(remote)),
                     links=[Link(first, {"runtime.link": "previous attempt"}), Link(remote)],
                     attributes={"b": True, "f": False, "neg": -5, "big": 2**62, "x": 1.5, "strs": ["a", "é"],
                                 "ints": (1, -2), "empty": "", "long": "ü" * 300})
    s.add_event("checkpoint", {"k": "v"})
    s.record_exception(ValueError("boom"))
    s.set_status(StatusCode.ERROR, "bad ü")
    s.end()
    with t.start_as_current_span("parent"):
        t.start_span("child", kind=SpanKind.CLIENT).end()
    provider.get_tracer("other", "1.2", schema_url="https://opentelemetry.io/schemas/1.21.0").start_span("o").end()
    # limits that drop attributes, events and links (their dropped counts are encoded)
    small, kept_small = ended(SpanLimits(max_span_attributes=1, max_events=0, max_links=0))
    s = small.get_tracer("runtime").start_span("cut", links=[Link(first)], attributes={"a": 1, "b": 2})
    s.add_event("lost")
    s.end()
    spans = kept.spans + kept_small.spans
    assert encode_spans(spans) == sdk_encode(spans).SerializePartialToString()
    for one in spans:
        assert encode_spans([one]) == sdk_encode([one]).SerializePartialToString()


def test_a_value_otlp_cannot_encode_is_refused():
    provider, kept = ended()
    s = provider.get_tracer("runtime").start_span("x")
    s._attributes._dict["odd"] = object()  # past the SDK's own check, as a buggy instrumentation might
    s.end()
    with pytest.raises(TypeError, match="no OTLP encoding for a object attribute"):
        encode_spans(kept.spans)


def test_the_exporter_posts_wire_encoded_batches_and_falls_back_to_the_sdk(receiver):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from diagnostics.otlp_wire import wire_encoded
    provider, kept = ended()
    t = provider.get_tracer("runtime")
    t.start_span("fast", attributes={"a": "b"}).end()
    odd = t.start_span("odd", attributes={"kept": 1})
    odd._attributes._dict["odd"] = object()
    odd.end()
    exporter = wire_encoded(OTLPSpanExporter)(endpoint=receiver.url + "/v1/traces")
    assert exporter.export(kept.spans[:1]) is SpanExportResult.SUCCESS
    assert exporter.export(kept.spans[1:]) is SpanExportResult.SUCCESS  # the SDK's encoder, which drops "odd"
    got = {s["name"]: s["attributes"] for s in receiver.spans}
    assert got == {"fast": {"a": "b"}, "odd": {"kept": 1}}
