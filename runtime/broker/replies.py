"""Reading what the scripts return: a claimed job (which a corrupt document must not turn
into an exception that loses its batch) and a registry entry's list of running jobs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..messages import Claimed

#: Fields per job in a claim reply (claim_one in _lib.lua).
CLAIM_FIELDS = 14
#: The claim fields read as numbers, by place: name and type.
_NUMBERS = {4: ("priority", int), 5: ("attempt", int), 6: ("retries", int), 7: ("lost", int),
            8: ("queued_at", float), 9: ("due_at", float), 10: ("started_at", float)}


def claimed_from(f: Sequence[str]) -> Claimed:
    """A Claimed from the 14 claim fields of claim.lua / enqueue.lua. Never raises for a
    bad document: what cannot be read is zero or empty and ``problem`` says what was
    wrong (the worker fails that job alone)."""
    problems = [f[13]] if f[13] else []
    n: dict[str, Any] = {}
    for i, (name, kind) in _NUMBERS.items():
        try:
            n[name] = kind(f[i])
        except (TypeError, ValueError):
            n[name] = kind(0)
            problems.append(f"{name} is {f[i]!r}, not a number" if f[i] else f"{name} is missing")
    try:
        meta = json.loads(f[11]) if f[11] else {}
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        meta = {}
        problems.append(f"meta is not a JSON object ({exc})")
    problems += [f"{name} is not UTF-8 text" for name, v in zip(("id", "path", "params", "queue"), f) if _bad_text(v)]
    if not f[1]:
        problems.append("path is missing")
    return Claimed(f[0], f[1], f[2], f[3], meta=meta, alone=bool(f[12]), problem="; ".join(problems) or None, **n)


def _bad_text(value: str) -> bool:
    """Does ``value`` hold bytes that were not UTF-8 (read as surrogate escapes)?"""
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def listed(entry: str | None) -> list[dict[str, Any]]:
    """The jobs a registry entry's ``running`` field lists ([] when missing or garbled)."""
    try:
        listed = json.loads(entry or "[]")
    except ValueError:
        return []
    return [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
