"""What the pages show, made from what the read API returns: the filter of a URL, params
with secrets redacted, times and durations for a person, safe links.

Nothing here escapes HTML: the templates do (Jinja2 autoescape); this module only
decides what text to show.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..client.search import JobFilter
from ..redact import SECRET_KEYS
from ..redact import redact as redact  # the pages redact with it (re-exported)
from ..status import Status
from ..units import fmt_seconds

#: Keys whose values are hidden in params (``--redact`` replaces it).
DEFAULT_REDACT = SECRET_KEYS
_SECRET_KEYS = re.compile(DEFAULT_REDACT)
#: URL query names of a job filter (short forms: they are typed and shared).
FILTER_NAMES = ("status", "queue", "path", "worker", "exc", "q", "since", "until", "slower")
_STATUSES = tuple(s.value for s in Status)
_RELATIVE = re.compile(r"^(-?)(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


#: The latest time a filter takes, UNIX s: 9999-12-31T23:59:59Z, the last an ISO-8601 date
#: can name (Python's datetime.MAXYEAR); the earliest is 0 (1970-01-01, before any job).
MAX_TIME_S = 253_402_300_799.0


def parse_time(text: str, now: float | None = None) -> float:
    """UNIX seconds from ``text``: ISO-8601 (UTC when it names no zone), UNIX seconds, or a
    time ago (``15m``, ``2h``, ``1d``), from 0 (1970) to :data:`MAX_TIME_S` (year 9999).
    Raises ValueError with what was wrong: also for ``inf``, ``nan`` and a time outside
    that range, which no job's change can be."""
    at = _parse_time(text.strip(), now)
    if not 0.0 <= at <= MAX_TIME_S:  # also refuses NaN and the infinities
        raise ValueError(f"bad time {text.strip()!r}: give a time from 1970 to the year 9999")
    return at


def _parse_time(text: str, now: float | None) -> float:
    m = _RELATIVE.match(text)
    if m:
        if m.group(1):
            raise ValueError(f"bad time {text!r}: a time ago is positive (15m, 2h, 1d)")
        return (time.time() if now is None else now) - float(m.group(2)) * _UNITS[m.group(3)]
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):  # not "inf", "nan", "1_000"
        return float(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r}: give ISO-8601 (2026-01-31T12:00), UNIX seconds or "
                         "a time ago (15m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def job_filter(query: Mapping[str, str], secret_keys: re.Pattern[str] | None = None) -> JobFilter:
    """The job filter of a URL query (:data:`FILTER_NAMES`; empty values ignored); its
    params text is searched in the params as the pages show them (the values of keys
    matching ``secret_keys`` hidden). Raises ValueError (one line, naming the valid
    values) for an unknown status, a bad or negative time or run time, or an ``until``
    before ``since``."""
    def get(name: str) -> str | None:
        value = (query.get(name) or "").strip()
        return value or None

    since, until, slower = get("since"), get("until"), get("slower")
    try:
        min_run_s = float(slower) if slower else None
    except ValueError:
        min_run_s = -1.0
    if min_run_s is not None and not 0 <= min_run_s < float("inf"):
        raise ValueError(f"bad run time (slower) {slower!r}: give seconds, 0 or more (0.5, 2)")
    status = get("status")
    if status is not None and status not in _STATUSES:
        raise ValueError(f"unknown status {status!r}: give one of {', '.join(_STATUSES)}")
    since_s, until_s = parse_time(since) if since else None, parse_time(until) if until else None
    if since_s is not None and until_s is not None and until_s < since_s:
        raise ValueError(f"until ({until}) is before since ({since}): no job can match")
    return JobFilter(status=status, queue=get("queue"), path=get("path"), worker=get("worker"),
                     exc_type=get("exc"), text=get("q"), since=since_s, until=until_s, min_run_s=min_run_s,
                     secret_keys=secret_keys or _SECRET_KEYS)


def repeated(items: Iterable[tuple[str, str]]) -> str | None:
    """Why a URL query of ``items`` (name, value) is refused: a name given more than once
    (every parameter of the dashboard takes one value; the last would win unseen); None
    when each is given once."""
    seen: set[str] = set()
    for name, _ in items:
        if name in seen:
            return f"{name[:40]!r} is given more than once: give one value"
        seen.add(name)
    return None


def filter_query(query: Mapping[str, str], **more: str | None) -> str:
    """The URL query of the filter in ``query`` (plus ``more``; a None value drops it)."""
    kept = {k: query[k] for k in FILTER_NAMES if query.get(k)}
    kept.update({k: v for k, v in more.items() if v is not None})
    return urlencode({k: v for k, v in kept.items() if v is not None})


def pretty(value: Any) -> str:
    """``value`` as indented JSON text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def when(ts: float | None) -> str:
    """UNIX seconds as ``2026-01-31 12:00:00`` UTC, or ``-``."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    """How long ago ``ts`` was (``12s ago``, ``5m ago``, ``3.0h ago``), or ``-``."""
    if ts is None:
        return "-"
    d = (time.time() if now is None else now) - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"


def age(ts: float | None, now: float | None = None) -> str:
    """How old something of time ``ts`` (UNIX s) is, for a person (``0.4 s``, ``42 s``,
    ``5.0 min``, ``3.0 h``, ``2.1 d``), or ``-`` for none."""
    if ts is None:
        return "-"
    return fmt_span(max(0.0, (time.time() if now is None else now) - ts))


def fmt_span(d: float) -> str:
    """A span of ``d`` seconds for a person: ``0.4 s``, ``42 s``, ``5.0 min``, ``3.0 h``."""
    if d < 10:
        return f"{d:.1f} s"
    return f"{d:.0f} s" if d < 120 else f"{d / 60:.1f} min" if d < 7200 else \
        f"{d / 3600:.1f} h" if d < 172800 else f"{d / 86400:.1f} d"


def seconds(value: float | None) -> str:
    """A duration for a person (``1.23 s``, ``45 ms``), or ``-``."""
    return fmt_seconds(value)


def safe_href(url: str | None) -> str | None:
    """``url`` when it is an http(s) link, else None: a link built from stored data never
    runs script (``javascript:``) or opens a local file."""
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


_HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def trace_href(template: str | None, trace_id: Any) -> str | None:
    """The trace link of the settings' ``trace_link`` template for ``trace_id`` (32 hex
    digits; anything else gives no link), when it is an http(s) URL."""
    return _link(template, trace_id=trace_id)


def sentry_href(template: str | None, event_id: Any) -> str | None:
    """The link of a ``--sentry-link`` template (``{event_id}``) for a Sentry event id (32
    hex digits), when it is an http(s) URL."""
    return _link(template, event_id=event_id)


def _link(template: str | None, **ids: Any) -> str | None:
    if not template or not all(isinstance(v, str) and _HEX_ID.match(v) for v in ids.values()):
        return None
    try:
        return safe_href(template.format(**ids))
    except (KeyError, IndexError, ValueError):
        return None
