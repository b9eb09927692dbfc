"""Receivers of what workers export: OpenTelemetry (OTLP/HTTP) and Sentry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otlp_receiver import Receiver
from sentry_receiver import SentryReceiver


@pytest.fixture(scope="session")
def collector() -> Iterator[Receiver]:
    """One OTLP receiver for the session, as a deployment has one collector: the tracer
    provider, like OpenTelemetry's global one, is made once per process."""
    with Receiver() as r:
        yield r


@pytest.fixture
def receiver(collector: Receiver) -> Iterator[Receiver]:
    """The session's OTLP receiver, emptied for this test (and this process's spans
    flushed to it at the end)."""
    collector.clear()
    yield collector
    import diagnostics.tracing as tracing
    tracing.flush()


@pytest.fixture
def sentry() -> Iterator[SentryReceiver]:
    with SentryReceiver() as r:
        yield r
