"""OTLP/protobuf encoding of finished spans, written straight to bytes.

The SDK's encoder (``opentelemetry.exporter.otlp.proto.common``'s ``encode_spans``) builds
a protobuf object for every span, attribute, value, event and link, then serializes
them: ~60 µs per job span on this project's bench machine, on the export thread but
under the GIL, so the largest single cost of a traced job (bench/README.md, issue 15).
:func:`encode_spans` writes the same ``ExportTraceServiceRequest`` message (the same
bytes: tests/diagnostics/test_otlp_wire.py compares them over varied spans) in a few
µs per span: the wire format is proto3's (varints, length-delimited fields in field
number order, default values left out), the field numbers those of
``opentelemetry/proto/trace/v1/trace.proto``, and the resource and scope of a batch are
encoded once per process. Values of a type OTLP has no encoding for raise TypeError (the
caller then uses the SDK's encoder, which drops that attribute and logs it).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger("runtime.tracing")

#: SpanFlags bits the SDK sets: "the is_remote bit is known" and "the parent is remote".
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_SMALL = [bytes([i]) for i in range(128)]
_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def varint(n: int) -> bytes:
    """``n`` (an int64 or uint64; negative as its 64-bit two's complement) as a varint."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else varint(n)) + payload


def _value(v: Any) -> bytes:
    """An ``AnyValue`` message's body for an attribute value."""
    if v is None:
        return b""
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, str):
        return _field(b"\x0a", v.encode())
    if isinstance(v, int):
        return b"\x18" + varint(v)
    if isinstance(v, float):
        return b"\x21" + _double(v)
    if isinstance(v, bytes):
        return _field(b"\x3a", v)
    if isinstance(v, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _value(x)) for x in v]))
    if isinstance(v, Mapping):
        return _field(b"\x32", b"".join([_field(b"\x0a", _key_value(str(k), x)) for k, x in v.items()]))
    raise TypeError(f"no OTLP encoding for a {type(v).__name__} attribute")


#: attribute key -> its encoded ``key`` field; bounded (cleared when full), as keys are a
#: program's own names
_keys: dict[str, bytes] = {}
_KEYS_MAX = 4096


def _key_value(key: str, v: Any) -> bytes:
    """A ``KeyValue`` message's body."""
    k = _keys.get(key)
    if k is None:
        if len(_keys) >= _KEYS_MAX:
            _keys.clear()
        k = _keys[key] = _field(b"\x0a", key.encode())
    return k + _field(b"\x12", _value(v))


#: (field tag, key, string value) -> the encoded field, for values that repeat (queue,
#: task path, status ...); a key stops being cached after _DISTINCT_MAX distinct values
#: (a job id, a message), so the cache holds at most that many per key
_fields: dict[tuple[bytes, str, str], bytes] = {}
_distinct: dict[str, int] = {}
_DISTINCT_MAX = 64


def attributes(tag: bytes, attrs: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields with the tag of the enclosing message's field."""
    if not attrs:
        return b""
    out = []
    # the SDK's BoundedAttributes is a Mapping over a plain dict: iterate that dict
    for k, v in getattr(attrs, "_dict", attrs).items():
        if type(v) is str:
            f = _fields.get((tag, k, v))
            if f is None:
                f = _field(tag, _key_value(k, v))
                n = _distinct.get(k, 0)
                if n < _DISTINCT_MAX and len(_keys) < _KEYS_MAX:
                    _distinct[k] = n + 1
                    _fields[(tag, k, v)] = f
            out.append(f)
        else:
            out.append(_field(tag, _key_value(k, v)))
    return b"".join(out)


def _flags(context: Any) -> bytes:
    return _fixed32(_HAS_IS_REMOTE | _IS_REMOTE if context is not None and context.is_remote else _HAS_IS_REMOTE)


def _trace_state(context: Any) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _field(b"\x1a", ",".join([f"{k}={v}" for k, v in state.items()]).encode())


def _dropped(tag: bytes, n: int) -> bytes:
    return tag + varint(n) if n else b""


def _event(e: Any) -> bytes:
    return (b"\x09" + _fixed64(e.timestamp) + _field(b"\x12", e.name.encode()) + attributes(b"\x1a", e.attributes)
            + _dropped(b"\x20", e.dropped_attributes))


def _link(link: Any) -> bytes:
    c = link.context
    return (_field(b"\x0a", c.trace_id.to_bytes(16, "big")) + _field(b"\x12", c.span_id.to_bytes(8, "big"))
            + attributes(b"\x22", link.attributes) + _dropped(b"\x28", link.dropped_attributes)
            + b"\x35" + _flags(c))


def span(s: Any) -> bytes:
    """A ``Span`` message's body for an ended SDK span (a ReadableSpan)."""
    c, parent, status = s.context, s.parent, s.status
    out = [b"\x0a\x10" + c.trace_id.to_bytes(16, "big"), b"\x12\x08" + c.span_id.to_bytes(8, "big")]
    if c.trace_state:
        out.append(_trace_state(c))
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    # SpanKind INTERNAL..CONSUMER (0..4) is SPAN_KIND_INTERNAL..CONSUMER (1..5)
    out += [_field(b"\x2a", s.name.encode()), b"\x30" + _SMALL[s.kind.value + 1],
            b"\x39" + _fixed64(s.start_time), b"\x41" + _fixed64(s.end_time),
            # the span's own attributes (public: a read-only proxy over them, slower to walk)
            attributes(b"\x4a", getattr(s, "_attributes", None) or s.attributes)]
    if s.dropped_attributes:
        out.append(b"\x50" + varint(s.dropped_attributes))
    if getattr(s, "_events", True) or s.dropped_events:  # most spans have none: skip the copies
        out += [_field(b"\x5a", _event(e)) for e in s.events]
        out.append(_dropped(b"\x60", s.dropped_events))
    if getattr(s, "_links", True) or s.dropped_links:
        out += [_field(b"\x6a", _link(link)) for link in s.links]
        out.append(_dropped(b"\x70", s.dropped_links))
    code, desc = status.status_code.value, status.description
    if desc:
        out.append(_field(b"\x7a", _field(b"\x12", desc.encode()) + (b"\x18" + _SMALL[code] if code else b"")))
    else:
        out.append(_STATUS[code])
    out.append(_REMOTE if parent is not None and parent.is_remote else _LOCAL)
    return b"".join(out)


#: a Status field without a message, by code (UNSET, OK, ERROR); the flags field
_STATUS = (b"\x7a\x00", b"\x7a\x02\x18\x01", b"\x7a\x02\x18\x02")
_LOCAL = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE)
_REMOTE = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


#: id(resource or scope) -> (the object, its encoded message body): both live as long as
#: the provider and its tracers, and are encoded once
_encoded: dict[int, tuple[Any, bytes]] = {}


def _once(obj: Any, encode: Any) -> bytes:
    hit = _encoded.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    body: bytes = encode(obj)
    if len(_encoded) >= _KEYS_MAX:
        _encoded.clear()
    _encoded[id(obj)] = (obj, body)
    return body


def _resource(r: Any) -> bytes:
    return attributes(b"\x0a", r.attributes)


def _scope(sc: Any) -> bytes:
    if sc is None:
        return b""
    return (_field(b"\x0a", sc.name.encode()) + (_field(b"\x12", sc.version.encode()) if sc.version else b"")
            + attributes(b"\x1a", sc.attributes))


def _schema(tag: bytes, url: str | None) -> bytes:
    return _field(tag, url.encode()) if url else b""


def encode_spans(spans: Sequence[Any]) -> bytes:
    """An ``ExportTraceServiceRequest`` (serialized) holding ``spans`` (SDK ReadableSpans),
    grouped by resource, then by instrumentation scope, in order of first appearance."""
    groups: dict[tuple[int, int], tuple[Any, Any, list[bytes]]] = {}
    for s in spans:
        res, scope = s.resource, s.instrumentation_scope or None
        entry = groups.get((id(res), id(scope)))
        if entry is None:
            entry = groups[(id(res), id(scope))] = (res, scope, [])
        entry[2].append(span(s))
    return request(groups.values())


def request(groups: Iterable[tuple[Any, Any, Sequence[bytes]]]) -> bytes:
    """An ``ExportTraceServiceRequest`` (serialized) from ``(resource, scope, span
    bodies)`` groups (bodies as :func:`span` makes them), by resource in order of first
    appearance, then by scope."""
    by_resource: dict[int, tuple[Any, list[bytes]]] = {}
    for res, scope, bodies in groups:
        if not bodies:
            continue
        entry = by_resource.get(id(res))
        if entry is None:
            entry = by_resource[id(res)] = (res, [])
        entry[1].append(_field(b"\x12", _field(b"\x0a", _once(scope, _scope))
                               + b"".join([_field(b"\x12", b) for b in bodies])
                               + _schema(b"\x1a", scope.schema_url if scope else None)))
    return b"".join([_field(b"\x0a", _field(b"\x0a", _once(res, _resource)) + b"".join(scopes)
                            + _schema(b"\x1a", res.schema_url)) for res, scopes in by_resource.values()])


def wire_encoded(cls: Any) -> Any:
    """A subclass of the OTLP/HTTP span exporter class ``cls`` that writes requests with
    :func:`request` (~6x cheaper than the SDK's encoder; the same bytes) and posts them
    through the exporter's own HTTP client (headers, compression, retries, timeout).
    ``export_encoded(groups)`` posts spans encoded already (``(resource, scope, span
    bodies)``, see tracing's NativeExportProcessor), where ``posts_encoded()``. Where this
    SDK version has no such client, or a batch holds a value this cannot encode, or it is
    over the exporter's request size limit, the SDK's own export runs."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Wire(cls):  # type: ignore[misc]
        def posts_encoded(self) -> bool:
            return not getattr(self, "_shutdown", True) and callable(getattr(getattr(self, "_client", None),
                                                                               "export", None))

        def export(self, spans: Any) -> Any:
            if not self.posts_encoded():
                return super().export(spans)
            try:
                body = encode_spans(spans)
            except TypeError:
                return super().export(spans)
            if len(body) > getattr(self, "_max_request_size", len(body)):
                return super().export(spans)  # which drops it, and logs why
            return self._post(body)

        def export_encoded(self, groups: Any) -> Any:
            body = request(groups)
            limit = getattr(self, "_max_request_size", len(body))
            if len(body) > limit:
                log.warning("dropping %d spans: the request would be %d bytes, over the exporter's limit of %d",
                            sum(len(g[2]) for g in groups), len(body), limit)
                return SpanExportResult.FAILURE
            return self._post(body)

        def _post(self, body: bytes) -> Any:
            ok = getattr(self._client.export(body), "success", False)
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    Wire.__name__ = Wire.__qualname__ = cls.__name__
    return Wire
