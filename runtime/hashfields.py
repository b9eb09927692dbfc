"""How a job's history and report are laid out in its Redis hash.

Redis keeps a hash as one compact listpack (a ziplist before Redis 7) while every field
name and value is at most ``hash-max-listpack-value`` bytes (64 by default) and turns it
into a hash table the first time one is longer: about twice the bytes, and a conversion
on the hot path (bench/README.md, redis_cost.py). So the parts of a document that
grow are stored as short fields:

- **history**: field ``hn`` counts the entries, field ``h<i>`` (i = 1..hn) holds entry i
  as a JSON array ``[at, status, worker, attempt, {more}]``, its tail left out where
  null or empty (``[1796573154.719511,"queued"]``, ``[1796573155.1,"claimed","host.12.ab",1]``).
  Scripts append an entry by writing two fields, without reading the others
  (runtime/broker/lua/_lib.lua ``entry``). A document written before this layout keeps
  its entries in the field ``history`` (JSON objects, comma-separated, without the
  brackets): they are read first.
- **report**: the ``timing`` and ``memory`` sections of the report (diagnostics/timing.py,
  diagnostics/memory.py) are stored as arrays of their values in fields ``rt`` and
  ``rm`` (:data:`SECTIONS` gives the order), the rest as JSON in ``report``.

With a worker id under about 30 characters (a host name under ~17) a finished no-op job
stays a listpack on a Redis with stock settings. Params, a result, a traceback or a note
over 64 bytes still make it a hash table: that costs bytes, never correctness.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: the field counting a job's history entries
COUNT = "hn"
#: the field of a document written before this layout holding all its entries
LEGACY = "history"
#: report section -> (its field, the keys stored in that order)
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "timing": ("rt", ("wall_s", "cpu_s", "switches", "wait_s", "wait_reason")),
    "memory": ("rm", ("rss_before", "rss_after", "rss_delta", "overlapping")),
}
#: the fields holding the report (runtime.messages.NOT_COMPACT, finish.lua's compact success)
REPORT_FIELDS = ("report", *(f for f, _ in SECTIONS.values()))

_ENTRY_FIELD = re.compile(r"h[1-9][0-9]*\Z")
_DIGITS = re.compile(r"[0-9]+")
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def is_history_field(name: str) -> bool:
    """Is hash field ``name`` part of the history (``hn``, ``h<i>``, ``history``)?"""
    return name in (COUNT, LEGACY) or _ENTRY_FIELD.match(name) is not None


def entry_field(i: int) -> str:
    """The field of history entry ``i`` (from 1)."""
    return f"h{i}"


def encode_entry(entry: Mapping[str, Any]) -> str:
    """History entry ``entry`` ({"at", "status", "worker"?, "attempt"?, ...}) as stored."""
    more = {k: v for k, v in entry.items() if k not in ("at", "status", "worker", "attempt")}
    out: list[Any] = [entry.get("at"), entry.get("status"), entry.get("worker"), entry.get("attempt"), more]
    while len(out) > 2 and out[-1] in (None, {}):
        out.pop()
    return _dumps(out)


def decode_entry(value: Any) -> dict[str, Any]:
    """A stored entry (parsed JSON: an array as :func:`encode_entry` makes, or an object of
    the layout before) as a dict. Raises ValueError for anything else."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, list) or len(value) < 2 or len(value) > 5 \
            or (len(value) == 5 and not isinstance(value[4], dict)):
        raise ValueError("not a history entry")
    out: dict[str, Any] = {"at": value[0], "status": value[1]}
    if len(value) > 2 and value[2] is not None:
        out["worker"] = value[2]
    if len(value) > 3 and value[3] is not None:
        out["attempt"] = value[3]
    if len(value) > 4:
        out.update(value[4])
    return out


def entry_count(data: Mapping[str, str]) -> int | None:
    """The entry count of hash ``data`` (field ``hn``; 0 when absent), None when it is not
    a whole number. The scripts write it with every entry they add: after one, it names
    that entry's field."""
    text = data.get(COUNT) or "0"
    return int(text) if _DIGITS.fullmatch(text) else None


def _entry_numbers(data: Mapping[str, str]) -> list[int]:
    """The numbers of the history entry fields hash ``data`` holds, in order (whatever its
    count ``hn`` says)."""
    return sorted(int(k[1:]) for k in data if _ENTRY_FIELD.match(k))


def history_length(data: Mapping[str, str]) -> int:
    """Entries in the history of hash ``data`` (its entry fields when it holds them, else
    its count ``hn``; and those of its field ``history``): MongoDB's version fence
    (runtime.store.mongo.sync)."""
    legacy = data.get(LEGACY) or ""
    n = 0
    if legacy:
        try:
            n = len(json.loads("[" + legacy + "]"))
        except ValueError:
            n = legacy.count('{"at":')
    numbers = _entry_numbers(data)
    if numbers:  # the whole hash: its entries, whatever a (corrupt) count says
        return n + len(numbers)
    return n + (entry_count(data) or 0)


def read_history(data: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    """(the history entries of hash ``data``, oldest first; what could not be read, cut at
    200 characters, or None). Every entry field it holds is read, whatever its count says;
    an entry that cannot be read is left out, and a count that is not a whole number or
    disagrees with the entries held is named: never raised."""
    entries: list[dict[str, Any]] = []
    bad: str | None = None
    legacy = data.get(LEGACY)
    if legacy:
        try:
            old = json.loads("[" + legacy + "]")
            if not all(isinstance(e, dict) for e in old):
                raise ValueError("an entry is not an object")
            entries += old
        except ValueError:
            bad = legacy[:200]
    numbers = _entry_numbers(data)
    for i in numbers:
        text = data[entry_field(i)]
        try:
            entries.append(decode_entry(json.loads(text)))
        except ValueError:
            bad = bad or text[:200]
    count = entry_count(data)
    if count is None or len(numbers) != count or (numbers and numbers[-1] != count):  # not exactly 1..count
        more = "..." if len(numbers) > 5 else ""
        bad = bad or f"{COUNT} = {data.get(COUNT)!r} with entries {numbers[:5]}{more}"[:200]
    return entries, bad


def report_fields(report: Mapping[str, Any], cap: Any) -> dict[str, str]:
    """The hash fields storing ``report``: its known sections (:data:`SECTIONS`) as arrays
    when they hold only their known keys with number or string values, the rest as ``cap(rest)``
    (a JSON text kept under max_report_bytes) in ``report``."""
    out: dict[str, str] = {}
    rest = dict(report)
    for section, (name, keys) in SECTIONS.items():
        value = rest.get(section)
        if isinstance(value, dict) and value and set(value) <= set(keys) \
                and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value.values()):
            out[name] = _dumps([value.get(k) for k in keys])
            del rest[section]
    if rest:
        out["report"] = cap(rest)
    return out


def read_report(data: Mapping[str, str], report: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``report`` (its field ``report``, parsed) with the sections stored apart in hash
    ``data`` added; (that, the first field that could not be read or None)."""
    bad = None
    for section, (name, keys) in SECTIONS.items():
        text = data.get(name)
        if not text:
            continue
        try:
            values = json.loads(text)
            if not isinstance(values, list) or len(values) != len(keys):
                raise ValueError("not a report section")
        except ValueError:
            bad = bad or name
            continue
        report = {**report, section: {k: v for k, v in zip(keys, values, strict=True) if v is not None}}
    return report, bad
