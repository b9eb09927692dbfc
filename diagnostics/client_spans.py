"""Child spans for every Redis and MongoDB call, through the official OpenTelemetry
instrumentations (opentelemetry-instrumentation-redis / -pymongo). Off by default.

With ``trace_clients = 1`` (``RUNTIME_TRACE_CLIENTS=1``), each redis-py command or
pipeline and each pymongo command becomes a CLIENT span, a child of whatever span is
current (inside a job: the job's consumer span), exported wherever the traces go. Costs
a span per round trip, the heartbeat thread's included, so it is for hunting a slow job,
not for every day. Install with ``pip install 'runtime[otel-clients]'``.

:class:`ClientSpans` is a middleware that instruments the clients as it is made: a
client's or worker's chain is built before its MongoDB client (runtime.client.parts),
and pymongo's listeners apply to clients made after them.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import ConfigError
from runtime.middleware import Middleware
from runtime.settings import Settings


def instrument_clients(settings: Any) -> None:
    """Instrument redis-py (and pymongo when ``settings.mongodb_url`` is set) once per
    process when ``settings.trace_clients`` is on; nothing otherwise.

    Raises ConfigError naming the extra to install when an instrumentation is missing.
    """
    if not settings.trace_clients:
        return
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        instrumentors: list[Any] = [RedisInstrumentor()]
        if settings.mongodb_url:
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
            instrumentors.append(PymongoInstrumentor())
    except ImportError as exc:
        raise ConfigError(f"trace_clients needs the OpenTelemetry instrumentations ({exc}): "
                          "pip install 'runtime[otel-clients]'") from None
    for inst in instrumentors:
        if not inst.is_instrumented_by_opentelemetry:
            inst.instrument()


class ClientSpans(Middleware):
    """Instruments the database clients when ``trace_clients`` is on (see the module);
    no job hooks. Raises ConfigError when the instrumentations are not installed."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        if settings is not None:
            instrument_clients(settings)
