"""The job document as plain data, and the JSON rules for what crosses the wire.

A job is one request to run a task with params. Its document is stored as a Redis hash of
strings (field names = :class:`Job` attribute names); times are UNIX seconds (UTC) in the
store and ISO-8601 UTC strings in :meth:`Job.to_dict`.

What params may hold (checked at enqueue, :func:`encode_params`): a JSON object whose
values are ``dict`` (string keys), ``list``/``tuple``, ``str``, ``int``, finite ``float``,
``bool`` and ``None``. Anything else (datetime, Decimal, bytes, set, file handles,
lambdas, NaN...) is refused with :class:`~runtime.errors.InvalidParams` naming its key.
As with the json module, int/float/bool/None dict keys are turned into strings.
Only JSON crosses the wire: no pickle anywhere.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidParams, JobTooLarge, ResultNotJSON
from .hashfields import read_history, read_report
from .status import FINAL, Status

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
dumps = _encoder.encode
loads = json.loads


def new_job_id(queue: str = "") -> str:
    """A new job id ``{queue}:{24 hex digits}``: the job's queue (its keys live in the
    queue's Redis Cluster hash slot, runtime.broker.keys), then 48 bits of ms and 48 random
    bits, so that the ids of one queue sort by creation time. Without a queue (an id that
    names no job in Redis: a local run, an operation), the hex digits alone."""
    digits = f"{int(time.time() * 1000):012x}{os.urandom(6).hex()}"
    return f"{queue}:{digits}" if queue else digits


def queue_of(job_id: str) -> str | None:
    """The queue a job id names (its part before the first ``:``), or None for an id that
    names none (no ``:``, or nothing before it: no queue has an empty name)."""
    queue, sep, _ = job_id.partition(":")
    return queue if sep and queue else None


def utf8_safe(text: str) -> str:
    """``text`` unchanged if it encodes as UTF-8; else lone surrogates (from undecodable
    file names, say) as backslash escapes, so storing it cannot fail."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _find_bad(value: Any, where: str, seen: set[int] | None = None) -> tuple[str, str] | None:
    """Path and type name of the first value that is not plain JSON, or None."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return None
        except UnicodeEncodeError:
            return (where, "str with a lone surrogate (not UTF-8)")
    seen = set() if seen is None else seen
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"float {value!r}")
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            return (where, "circular reference")
        if len(seen) > 10_000:
            return (where, "structure nested too deep")
        seen.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return (f"{where}[{k!r}]", f"key of type {type(k).__name__}")
            bad = _find_bad(v, f"{where}[{k!r}]", seen)
            if bad:
                return bad
        seen.discard(id(value))
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _find_bad(v, f"{where}[{i}]", seen)
            if bad:
                return bad
        seen.discard(id(value))
        return None
    return (where, type(value).__name__)


def _safe_find_bad(value: Any, where: str) -> tuple[str, str] | None:
    try:
        return _find_bad(value, where)
    except RecursionError:
        return (where, "structure nested too deep")


def encode_params(params: Any, max_bytes: int) -> str:
    """``params`` as a compact JSON string.

    Raises InvalidParams (with ``.key``) when params is not a dict or holds a value that is
    not plain JSON, and JobTooLarge when the encoding is over ``max_bytes`` bytes.
    """
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParams(f"params must be a JSON object (dict), got {type(params).__name__}")
    try:
        text = dumps(params)
        size = _utf8_size(text, max_bytes)
    except (TypeError, ValueError, RecursionError):
        bad = _safe_find_bad(params, "params")
        where, what = bad if bad else ("params", "value")
        raise InvalidParams(
            f"{where} is a {what}, which is not JSON; pass str, int, float, bool, None, "
            f"list or dict (e.g. a datetime as .isoformat(), a Decimal as str)",
            key=where,
        ) from None
    if size > max_bytes:
        raise JobTooLarge(
            f"params are {_size_text(size, text)} encoded, over the limit of {max_bytes} "
            f"bytes (max_job_bytes); store large data elsewhere and pass a reference"
        )
    return text


def _utf8_size(text: str, max_bytes: int) -> int:
    """Bytes of ``text`` in UTF-8, without encoding it when it has more characters than
    ``max_bytes`` (each takes one byte at least: too large either way; an encoded copy of
    a 10 MB result cost the worker 10 MB more). Raises UnicodeEncodeError for a lone
    surrogate."""
    if len(text) > max_bytes or text.isascii():
        return len(text)
    return len(text.encode("utf-8"))


def _size_text(size: int, text: str) -> str:
    return f"{size} bytes" if text.isascii() or size != len(text) else f"at least {size} bytes"


def encode_result(result: Any, max_bytes: int) -> str:
    """A task's return value as JSON. Raises ResultNotJSON naming the bad part or the size."""
    if result is None:  # most tasks return nothing: no encoder call
        return "null"
    if isinstance(result, str) and len(result) > max_bytes:  # too large before its JSON copy is made
        raise ResultNotJSON(f"result is a str of {len(result)} characters, over max_job_bytes={max_bytes}")
    try:
        text = dumps(result)
        size = _utf8_size(text, max_bytes)
    except (TypeError, ValueError, RecursionError):
        bad = _safe_find_bad(result, "result")
        where, what = bad if bad else ("result", type(result).__name__)
        raise ResultNotJSON(f"{where} is a {what}, which cannot be stored as JSON") from None
    if size > max_bytes:
        raise ResultNotJSON(f"result is {_size_text(size, text)} encoded, over max_job_bytes={max_bytes}")
    return text


def iso(ts: float | None) -> str | None:
    """UNIX seconds -> ISO-8601 UTC with microseconds and a Z, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def exc_name(exc_type: str | None) -> str | None:
    """The class name of an exception type, its last dotted part ("Upstream" of
    "myapp.errors.Upstream"; None for None): what a filter by exception type matches on
    (runtime.client.search.JobFilter), and MongoDB indexes as ``exc_name``."""
    return exc_type.rpartition(".")[2] if exc_type else None


_FLOATS = {"queued_at", "due_at", "started_at", "ended_at", "changed_at", "progress", "timeout_s"}
_INTS = {"priority", "attempt", "retries", "lost"}
_JSON = {"params", "result", "logs", "report", "meta", "artifacts"}
#: how a stored field is read back (fields not named: as the string itself)
_KINDS: dict[str, Any] = {**dict.fromkeys(_FLOATS, float), **dict.fromkeys(_INTS, int),
                          **dict.fromkeys(_JSON, loads), "status": Status}
_FIELD_NAMES: dict[type, frozenset[str]] = {}


@dataclass
class Job:
    """One job document. Times are UNIX seconds (UTC); ``due_at`` is when it may start.

    ``queued_at`` and ``due_at`` are on the Redis server's clock (which decides when a
    delayed job is due); ``started_at`` and ``ended_at`` on the worker host's clock, taken
    around the run itself, except that while an attempt runs ``started_at`` is when it was
    claimed (Redis clock: the start is written with the outcome). Across hosts they agree
    as well as the clocks do (NTP).
    """

    id: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    status: Status = Status.QUEUED
    queued_at: float | None = None
    due_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: time of its last status change (Redis clock): the order of listings and their
    #: cursors; read from the index that orders them, or the history (None: neither read)
    changed_at: float | None = None
    worker: str | None = None
    attempt: int = 0           # how many times a worker started it
    retries: int = 0           # how many retries were scheduled
    lost: int = 0              # how many times its worker died while running it
    timeout_s: float | None = None
    result: Any = None
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    reason: str | None = None  # short machine-readable cause: worker-lost, bad-params...
    overrun: str | None = None  # set by the watchdog when the job ran past its timeout without yielding
    progress: float | None = None
    progress_message: str | None = None
    logs: list[Any] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # what middleware measured (timing...)
    meta: dict[str, Any] = field(default_factory=dict)    # what producer middleware attached
    artifacts: dict[str, str] = field(default_factory=dict)  # what middleware stored by name (a profile...)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: status moved: the id it lives on as in another queue (runtime.broker.moves)
    moved_to: str | None = None
    #: a job that was moved here from another queue: the id it had there
    moved_from: str | None = None

    @classmethod
    def from_hash(cls, data: Mapping[str, str], history: bool = True, job_id: str = "") -> Job:
        """Build from a Redis hash (str -> str) of job ``job_id`` (its key names it: the hash
        has no field ``id``, nor ``attempt``, ``retries`` or ``lost`` while they are 0), whose
        history and report are laid out as runtime.hashfields says (without ``history``: a
        listing, the history is not read).
        A field, or a history entry, that cannot be read (a corrupt document) is left out
        and named in ``unreadable`` (field -> its text), never raised."""
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
        kw: dict[str, Any] = {"id": job_id} if job_id else {}
        bad: dict[str, str] = {}
        for key, raw in data.items():
            if raw == "" or key not in names or key == "history":
                continue
            kind = _KINDS.get(key)
            try:
                kw[key] = value = raw if kind is None else kind(raw)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(raw)
            except (TypeError, ValueError):
                kw.pop(key, None)
                bad[key] = raw[:200]
        for key in ("id", "path"):
            if key not in kw:
                kw[key] = ""
                bad.setdefault(key, "(missing)")
        kw["report"], unread = read_report(data, kw.get("report") or {})
        if unread:
            bad[unread] = data[unread][:200]
        job = cls(**kw)
        job.history = []
        if history:
            job.history, unread = read_history(data)
            if unread is not None:
                bad["history"] = unread
        if bad:
            job.__dict__["_unreadable"] = bad
        if job.history and job.changed_at is None:
            job.changed_at = job.history[-1].get("at")
        return job

    @property
    def unreadable(self) -> dict[str, str]:
        """Fields of the stored document that could not be read (name -> its text, cut at
        200 characters): a corrupt document, as :meth:`from_hash` found it."""
        return dict(self.__dict__.get("_unreadable", {}))

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    @property
    def wait_s(self) -> float | None:
        """Seconds from due to started (queue wait), if it started."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at - (self.due_at or self.queued_at or self.started_at))

    @property
    def run_s(self) -> float | None:
        """Seconds from started to ended, if it ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self, history: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: times as ISO-8601 UTC strings, history times likewise; without
        ``history`` (a listing, which does not read it) ``"history"`` is None."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_at"):
                value = iso(value)
            elif f.name == "status":
                value = value.value
            elif f.name == "history":
                value = [{**h, "at": iso(h.get("at"))} for h in value] if history else None
            elif f.name == "artifacts":
                value = {name: f"<{len(data)} bytes: runtime job {self.id} --artifact {name}>"
                         for name, data in value.items()}
            out[f.name] = value
        out["wait_s"] = self.wait_s
        out["run_s"] = self.run_s
        if self.unreadable:
            out["unreadable"] = self.unreadable
        return out
