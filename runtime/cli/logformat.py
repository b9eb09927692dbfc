"""The worker's own log lines on stderr: text (default) or one JSON object per line.

Both mask secrets and escape control characters (runtime.redact). A job's lines carry
the job's fields as ``extra`` (JOB_FIELDS: job id, task, queue, status, attempt, duration
in seconds, trace id); the text form shows them in its message, the JSON form also as
fields of their own, so a log shipper (Loki, ELK) can join a line to its job and trace.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..redact import mask, printable

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Record attributes copied to a JSON line when present (set through ``extra``).
JOB_FIELDS = ("job_id", "task", "queue", "status", "attempt", "duration_s", "trace_id", "error_type", "worker_id")


class SafeFormatter(logging.Formatter):
    """Log lines with their secrets masked and their controls escaped (runtime.redact)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(mask(super().format(record)))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC, milliseconds), ``level``,
    ``logger``, ``message``, the JOB_FIELDS present, and ``exception`` (its traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": mask(record.getMessage())}
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)  # ASCII: controls and non-ASCII escaped


#: The format configure() set for this process ("text" until then).
_format = "text"


def configure(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` ("text" or "json")."""
    global _format
    _format = fmt
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(JsonFormatter() if fmt == "json" else SafeFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def logs_json() -> bool:
    """Does this process log JSON lines (``--log-format json``)?"""
    return _format == "json"


def json_error(message: str) -> str:
    """A command's last word ``message`` as a JSON log line (level ERROR, logger
    ``runtime.cli``), for a process that logs JSON."""
    record = logging.LogRecord("runtime.cli", logging.ERROR, __file__, 0, message, None, None)
    return JsonFormatter().format(record)
