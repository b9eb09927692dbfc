"""Default values of settings that are tables or limits (runtime.settings reads them)."""

from __future__ import annotations

from .status import Status

DAY_S = 86_400.0
#: Most worker processes one supervisor runs: each is a Python process of ~45 MB; more is
#: a typo (a fork bomb), not a plan. Run several supervisors (machines) beyond it.
MAX_PROCESSES = 256

#: Default seconds a job document is kept after it reaches each final status. Successes
#: go after a day (RQ keeps results 500 s, MRQ forever); what needs a look stays a week.
DEFAULT_TTL_S: dict[str, float] = {
    Status.SUCCESS: DAY_S,
    Status.CANCEL: DAY_S,
    Status.FAILED: 7 * DAY_S,
    Status.ABORT: 7 * DAY_S,
    Status.TIMEOUT: 7 * DAY_S,
    Status.MAXRETRIES: 7 * DAY_S,
    Status.MOVED: DAY_S,
}

#: Default seconds a MongoDB job document is kept after each final status: MongoDB is the
#: long-term history, so months, independent of Redis's ``ttl_s``.
DEFAULT_MONGODB_TTL_S: dict[str, float] = {
    Status.SUCCESS: 90 * DAY_S,
    Status.CANCEL: 90 * DAY_S,
    Status.FAILED: 180 * DAY_S,
    Status.ABORT: 180 * DAY_S,
    Status.TIMEOUT: 180 * DAY_S,
    Status.MAXRETRIES: 180 * DAY_S,
    Status.MOVED: 90 * DAY_S,
}

#: Trace links by name (the setting ``trace_link``): Jaeger's UI, and Grafana's Explore
#: on the Tempo data source (uid "tempo") that deploy/docker-compose.tracing.yml provisions,
#: in Grafana 10+'s URL form (``panes``, URL-encoded JSON).
TRACE_LINKS = {
    "jaeger": "http://localhost:16686/trace/{trace_id}",
    "tempo": ("http://localhost:3000/explore?schemaVersion=1&orgId=1&panes=%7B%22a%22%3A%7B%22datasource%22%3A%22tempo%"
              "22%2C%22queries%22%3A%5B%7B%22refId%22%3A%22A%22%2C%22datasource%22%3A%7B%22type%22%3A%22tempo%22%2C%22u"
              "id%22%3A%22tempo%22%7D%2C%22queryType%22%3A%22traceql%22%2C%22query%22%3A%22{trace_id}%22%7D%5D%2C%22ran"
              "ge%22%3A%7B%22from%22%3A%22now-1h%22%2C%22to%22%3A%22now%22%7D%7D%7D"),
}
