"""Caller-chosen job ids and unique keys: the rules their values follow (no I/O).

A caller-chosen id (``queue_job(..., job_id=...)``) becomes the job's id under its queue,
``{queue}:{job_id}`` (:func:`scoped_id`: every job id names its queue, whose Redis Cluster
hash slot holds the job's keys, runtime.broker.keys), which is also its MongoDB ``_id``; a
unique key (``unique_key=...``) names ``{p}:u:{queue}:{key}``: it is unique within its
queue. Both are refused when they could break a key name:
empty, longer than :data:`MAX_ID_CHARS`, or holding a character outside
:data:`ID_CHARS` (no spaces, no braces: a ``{...}`` would choose a Redis Cluster hash slot;
no commas: lists of ids are comma-separated in the CLI). A job id may not have the form of
a schedule's ids (:data:`FIRE_ID`, :data:`RUN_NOW_ID`) or of a moved job's (:data:`MOVED_ID`):
those are runtime's own. De-duplication
itself is done atomically by enqueue.lua.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import InvalidParams

#: Longest caller-chosen job id or unique key, characters.
MAX_ID_CHARS = 200
#: Characters allowed in a caller-chosen job id or unique key (a regex class).
ID_CHARS = r"A-Za-z0-9_.:@/+=\-"
_ID = re.compile(f"[{ID_CHARS}]+")
#: The ids of schedules' fire times (``NAME@2026-12-06T05:00:00Z``, runtime.schedule):
#: a caller may not choose one, which would take a fire time's id and stop it from firing.
FIRE_ID = re.compile(r".+@\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")
#: The ids of ``runtime schedules run-now NAME`` (``NAME@now-<ms>``,
#: runtime.scheduler.report.run_now): a caller may not choose one either, which would take
#: the id a run-now is about to use and make it return the caller's job instead.
RUN_NOW_ID = re.compile(r".+@now-\d+")
#: The ids of jobs moved to another queue (``QUEUE:REST@m`` and 12 hex digits, given by
#: runtime/broker/lua/move.lua): a caller may not choose one, which could take the id a
#: move is about to give a job.
MOVED_ID = re.compile(r".+@m[0-9a-f]{12}")
#: Longest unique window, seconds: 10 years, as the longest delay of a job
#: (runtime.client.limits.MAX_DELAY_S), so that a job queued that far ahead can hold its
#: key until it runs; a longer window would outlive any job, and its expiry in ms would
#: leave the range of the platform's timestamps.
MAX_UNIQUE_FOR_S = 10 * 365 * 86_400.0


def check_id(value: object, what: str = "job_id", *, own: bool = False) -> str:
    """``value`` if it is a valid caller-chosen job id or unique key (``what`` names it in
    the error). A job id of a schedule's form (:data:`FIRE_ID`, :data:`RUN_NOW_ID`) is
    refused unless ``own`` (runtime's own id: a run-now). Raises InvalidParams, one line."""
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidParams(f"{what} is {len(value)} characters long; at most {MAX_ID_CHARS} are allowed")
    if not _ID.fullmatch(value):
        bad = sorted({c for c in value if not _ID.fullmatch(c)})
        raise InvalidParams(f"{what} {value!r} holds characters that are not allowed ({''.join(bad)!r}); "
                            f"use letters, digits and _ . : @ / + = -")
    if what == "job_id" and not own and MOVED_ID.fullmatch(value):
        raise InvalidParams(f"job_id {value!r} has the form of a moved job's id (ID@m and 12 hex digits), which "
                            f"only moves give; choose another")
    if what == "job_id" and not own and (FIRE_ID.fullmatch(value) or RUN_NOW_ID.fullmatch(value)):
        raise InvalidParams(f"job_id {value!r} has the form of a schedule's job id (NAME@ISO-time of a fire time, "
                            f"NAME@now-MS of a run-now), which only schedules may use; choose another")
    return value


def looks_like_id(text: str) -> bool:
    """Could ``text`` be a job id (a queue name, ``:``, then an id of :data:`ID_CHARS`)?
    For input that only names jobs (no error: a caller filters with it)."""
    return 0 < len(text) <= 2 * MAX_ID_CHARS and _ID.fullmatch(text) is not None


def scoped_id(queue: str, job_id: str, own: bool = False) -> str:
    """The id of a job of ``queue`` whose caller chose ``job_id`` (checked by
    :func:`check_id`, ``own`` as there): ``{queue}:{job_id}``, or ``job_id`` itself when it
    already starts with ``{queue}:`` (an id read back from an earlier job). Raises
    InvalidParams."""
    job_id = check_id(job_id, own=own)
    return job_id if job_id.startswith(f"{queue}:") else f"{queue}:{job_id}"


def unique_for_arg(text: str | None) -> float | None:
    """The CLI's ``--unique-for`` text as seconds (None: not given), for :func:`check_unique`.
    Raises InvalidParams, one line, as the API does for a value that is not a number."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidParams(f"unique_for must be a number of seconds, got {text!r}") from None


def check_unique(unique_key: str | None, unique_for: float | None) -> tuple[str, float]:
    """(unique key, window in seconds) checked, or ("", 0.0) for none. ``unique_for``
    (seconds, an int or a float: text is refused; the CLI converts its own with
    :func:`unique_for_arg`) is required with a key and meaningless without one: a finite
    number above 0
    and at most :data:`MAX_UNIQUE_FOR_S` (10 years, the longest delay of a job: see
    there). The key is released sooner when its job's document expires. Raises
    InvalidParams, one line (the CLI's ``--unique-for`` goes through this check too)."""
    if unique_key is None:
        if unique_for is not None:
            raise InvalidParams("unique_for is given without a unique_key")
        return "", 0.0
    key = check_id(unique_key, "unique_key")
    if unique_for is None:
        raise InvalidParams("unique_key needs unique_for: the seconds during which an enqueue with the same "
                            "key returns the existing job")
    if isinstance(unique_for, bool) or not isinstance(unique_for, (int, float)):
        raise InvalidParams(f"unique_for must be a number of seconds, got {unique_for!r}")
    seconds = float(unique_for)
    if not 0 < seconds <= MAX_UNIQUE_FOR_S:  # also refuses NaN and infinities
        raise InvalidParams(f"unique_for must be above 0 and at most {MAX_UNIQUE_FOR_S:.0f} seconds (10 years), "
                            f"got {unique_for!r}")
    return key, seconds


def batch_ids(n: int, job_ids: Sequence[str | None] | None, unique_keys: Sequence[str | None] | None,
              unique_for: float | None) -> list[tuple[str | None, tuple[str, float]]]:
    """Per job of a batch of ``n`` (``queue_jobs``): its caller-chosen id (None: generated)
    and its (unique key, window) as :func:`check_unique` gives them, from ``job_ids`` and
    ``unique_keys`` (one per job, None for a job without; None: none) and the window
    ``unique_for`` they share. Raises InvalidParams, one line: a sequence of another
    length, a bad id or key, ``unique_for`` without keys or keys without it."""
    if job_ids is None and unique_keys is None and unique_for is None:
        return [(None, ("", 0.0))] * n
    for name, given in (("job_ids", job_ids), ("unique_keys", unique_keys)):
        if given is not None and (isinstance(given, str) or len(given) != n):
            got = "a string" if isinstance(given, str) else f"{len(given)}"
            raise InvalidParams(f"{name} must give one per params dict ({n}, None for a job without), got {got}")
    if not unique_keys or all(k is None for k in unique_keys):
        check_unique(None, unique_for)  # unique_for alone is refused
    ids = [None if j is None else check_id(j) for j in (job_ids or [None] * n)]
    keys = [("", 0.0) if k is None else check_unique(k, unique_for) for k in (unique_keys or [None] * n)]
    return list(zip(ids, keys))
