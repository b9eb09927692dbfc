"""Tasks for the MongoDB store tests (big reports and results)."""

from __future__ import annotations

from typing import Any

from runtime.context import current_job


def big_report(kib: int = 300) -> int:
    """Stores a report entry of ``kib`` KiB (over max_report_bytes: cut with a marker)."""
    current_job.get().report["big"] = "x" * (kib * 1024)
    return kib


def big_result(kib: int = 200) -> str:
    """Returns a string of ``kib`` KiB."""
    return "y" * (kib * 1024)


def echo(value: Any = None) -> Any:
    """Returns its parameter (a result of any JSON value)."""
    return value


def log_undecodable(name_hex: str = "ff") -> str:
    """Prints a plain line, then one holding a file name that is not UTF-8 (decoded with
    surrogateescape, as os.listdir does: a lone surrogate), then another plain line."""
    import os
    print("plain line before")
    print("opening " + os.fsdecode(bytes.fromhex(name_hex)))
    print("plain line after")
    return "done"
