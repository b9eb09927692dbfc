"""Sizes and durations as people read and write them."""

from __future__ import annotations

from typing import Any


def fmt_bytes(n: float | None) -> str:
    """``536870912`` -> ``'512.0 MiB'``; None -> ``'-'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_seconds(s: float | None) -> str:
    """``0.0123`` -> ``'12.3 ms'``, ``2.5`` -> ``'2.50 s'``; None -> ``'-'``."""
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_duration(s: float) -> str:
    """A span of seconds for a person: ``42 s``, ``4 min 10 s``, ``3 h 05 min``, ``12 d 3 h``."""
    n = round(s)
    if n < 60:
        return f"{max(s, 0.0):.0f} s" if s >= 1 or s <= 0 else f"{s:.1f} s"
    if n < 3600:
        return f"{n // 60} min {n % 60} s"
    if n < 86_400:
        return f"{n // 3600} h {n % 3600 // 60:02d} min"
    return f"{n // 86_400} d {n % 86_400 // 3600} h"


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: Any) -> int:
    """``512M`` -> 536870912: a size with an optional unit K, M, G or T (powers of 1024,
    also written KB, MiB...), or a plain number of bytes. Raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper().replace("IB", "").rstrip("B") or "0"
    num, unit = text, ""
    if text[-1] in _UNITS:
        num, unit = text[:-1], text[-1]
    try:
        number = float(num)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (use bytes, or K, M, G: 512M)") from None
    return int(number * _UNITS[unit])


def plural(n: int, word: str, many: str | None = None) -> str:
    """``word`` as it goes after the count ``n``: ``job`` for 1, ``jobs`` (or ``many``) else."""
    return word if n == 1 else (many or word + "s")
