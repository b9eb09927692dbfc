"""A real OTLP/HTTP receiver for the tests: decodes ExportTraceServiceRequest bodies."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """Collects spans as dicts: name, kind, trace_id, span_id, parent_span_id (hex),
    attributes, status (code, message), events, links, resource attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.points: list[dict[str, Any]] = []  # metric data points: name, attributes, value
        self.latest: dict[Any, dict[str, Any]] = {}
        self.metrics_status = 200  # the HTTP status metric exports get (405: refused as by Jaeger)
        self.refused = 0  # metric exports refused so far
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.endswith("/v1/metrics") and receiver.metrics_status != 200:
                    receiver.refused += 1  # a traces-only backend, as Jaeger is
                    self.send_response(receiver.metrics_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.endswith("/v1/metrics"):
                    mreq = metrics_service_pb2.ExportMetricsServiceRequest()
                    mreq.ParseFromString(body)
                    receiver._add_metrics(mreq)
                    out = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    receiver._add(req)
                    out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _add(self, req: Any) -> None:
        with self.lock:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name, "kind": s.kind, "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "status": (s.status.code, s.status.message),
                            "events": [e.name for e in s.events],
                            "event_attributes": [{a.key: _value(a.value) for a in e.attributes} for e in s.events],
                            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                            "resource": resource,
                        })

    def _add_metrics(self, req: Any) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, kind).data_points:
                            attrs = {a.key: _value(a.value) for a in dp.attributes}
                            if kind == "histogram":
                                value: Any = {"count": dp.count, "sum": dp.sum, "bounds": list(dp.explicit_bounds),
                                              "buckets": list(dp.bucket_counts), "min": dp.min, "max": dp.max,
                                              "exemplars": [(e.trace_id.hex(), e.as_double) for e in dp.exemplars]}
                            else:
                                value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                            key = (m.name, tuple(sorted(attrs.items())))
                            self.latest[key] = {"name": m.name, "kind": kind, "attributes": attrs, "value": value}
            self.points = list(self.latest.values())  # cumulative: the last export holds the totals

    def clear(self) -> None:
        """Forget what was received so far."""
        with self.lock:
            self.spans.clear()
            self.points.clear()
            self.latest.clear()
            self.metrics_status, self.refused = 200, 0

    def find(self, **match: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if all(s.get(k) == v for k, v in match.items())]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
