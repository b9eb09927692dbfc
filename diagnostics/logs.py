"""Logs of every job: records of the logging module and ``print`` output emitted while a
job runs are captured for that job only (by the ``current_job`` ContextVar, so 50
interleaving greenlets keep their own lines), capped in count and bytes with a marker
saying how much was dropped, and stored with the job (``job.logs``).

Records still reach the worker's own handlers too (its console); print output is passed
through to the real stream as well, a line at a time as each line ends (so the lines of
greenlets do not interleave), with control characters and what the stream cannot encode
escaped (``\\x1b``, ``\\xe9``): the job's logs keep the text as printed. A carriage
return starts a line again, as on a terminal: a redrawn progress bar is kept as its last
state.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from runtime.context import JobContext, current_job
from runtime.middleware import Middleware
from runtime.redact import printable
from runtime.resets import on_reset

DEFAULT_MAX_LINES = 1000
DEFAULT_MAX_BYTES = 65_536
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Writes of one open line (no newline yet) joined at once: bounds what a progress bar
#: redrawn with carriage returns keeps until its line ends.
PIECES = 1000


class _Limits:
    def __init__(self, lines: int, size: int) -> None:
        self.lines, self.size = lines, size


def add_line(job: JobContext, line: str, limits: _Limits) -> None:
    """Append ``line`` to the job's logs unless over the limits (then count it as dropped)."""
    state = job.state.setdefault("logs", [0, 0, 0])  # bytes kept, lines dropped, bytes dropped
    n = len(line.encode("utf-8", "replace"))
    if len(job.logs) >= limits.lines or state[0] + n > limits.size:
        state[1] += 1
        state[2] += n
        return
    state[0] += n
    job.logs.append(line)
    write_tail(job)


def write_tail(job: JobContext) -> None:
    """Store the running job's logs so far, for a live tail (the dashboard's job page), at
    most once per ``progress_interval_s`` counted from its first line: a job that ends
    sooner writes them only with its outcome, at no cost. Never re-entered (a warning the
    write logs is a line of the job too)."""
    if job.write is None or job.state.get("tail_writing"):
        return
    now = time.monotonic()
    if now - job.state.setdefault("tail_written_at", now) < job.interval_s:
        return
    job.state["tail_writing"] = True
    try:
        job.state["tail_written_at"] = now
        job.write(job.job_id, {"logs": json.dumps(job.logs, ensure_ascii=False)})
    finally:
        job.state["tail_writing"] = False


class JobLogHandler(logging.Handler):
    """Sends each record emitted inside a job to that job's logs."""

    def __init__(self, limits: _Limits) -> None:
        super().__init__(logging.NOTSET)
        self.limits = limits
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        job = current_job.get()
        if job is None:
            return
        try:
            line = self.format(record)
            if job.log_fields:  # the trace and span ids, set by Tracing
                line += " [" + " ".join(f"{k}={v}" for k, v in job.log_fields.items()) + "]"
            add_line(job, line, self.limits)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class JobStream:
    """A stand-in for sys.stdout/sys.stderr: inside a job, lines go to its logs too."""

    def __init__(self, real: TextIO, label: str, limits: _Limits) -> None:
        self._real, self._label, self._limits = real, label, limits
        self._key = "partial_" + label  # the job's open line: job.state[_key], its writes

    def write(self, text: str) -> int:
        job = current_job.get()
        if job is None:
            self._show(text)
        elif text:
            pieces = job.state.get(self._key)
            if pieces is None:
                pieces = job.state[self._key] = []
            pieces.append(text)
            if "\n" in text or len(pieces) >= PIECES:
                self._end_lines(job, pieces)
        return len(text)

    def _end_lines(self, job: JobContext, pieces: list[str]) -> None:
        """Add the lines the job's open line (``pieces``, its writes since the last
        newline) ends to the job's logs and show them; keep the line it starts.

        Each write is appended as it comes and joined once, here, at a newline or every
        PIECES writes (linear in the output). A carriage return starts the line again, as
        on a terminal, so a progress bar redrawn 20,000 times is kept, and shown on the
        worker's console, as its last state."""
        *ended, rest = "".join(pieces).split("\n")
        pieces.clear()
        for i, line in enumerate(ended):
            line = line.rstrip("\r")
            ended[i] = line = line[line.rfind("\r") + 1:]
            add_line(job, f"[{self._label}] {line}", self._limits)
        if ended:
            self._show(printable("\n".join(ended) + "\n"))  # a job's output must not drive the terminal
        pieces.append(rest[rest.rfind("\r") + 1:])

    def _show(self, text: str) -> None:
        """Write ``text`` to the real stream, escaping what its encoding cannot take."""
        try:
            self._real.write(text)
        except UnicodeEncodeError:  # e.g. an ASCII stdout: escaped, never the job's failure
            encoding = getattr(self._real, "encoding", None) or "ascii"
            self._real.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def flush_job(self, job: JobContext) -> None:
        """At the job's end: its open line, if any, ends."""
        pieces = job.state.pop(self._key, None)
        if pieces and any(pieces):
            pieces.append("\n")
            self._end_lines(job, pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Logs(Middleware):
    """Captures each job's log records and print output into ``job.logs``."""

    _installed: dict[str, Any] = {}

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.limits = _Limits(getattr(settings, "max_log_lines", DEFAULT_MAX_LINES),
                              getattr(settings, "max_log_bytes", DEFAULT_MAX_BYTES))

    def _install(self) -> None:
        if not Logs._installed:
            handler = JobLogHandler(self.limits)
            logging.getLogger().addHandler(handler)
            Logs._installed.update(handler=handler, streams=[])
        self._wrap_streams()

    def _wrap_streams(self) -> None:
        """Put JobStreams on sys.stdout/stderr (again, if something replaced them since)."""
        streams = Logs._installed["streams"]
        for name in ("stdout", "stderr"):
            real = getattr(sys, name)
            if not isinstance(real, JobStream):
                stream = JobStream(real, name, self.limits)
                setattr(sys, name, stream)
                streams[:] = [s for s in streams if s._label != name] + [stream]

    def on_worker_start(self, worker: Any) -> None:
        self._install()

    def before_job(self, job: JobContext) -> None:
        if not isinstance(sys.stdout, JobStream) or not isinstance(sys.stderr, JobStream):
            self._install()

    def after_job(self, job: JobContext, outcome: Any) -> None:
        d = job.state
        if "partial_stdout" in d or "partial_stderr" in d:
            for stream in Logs._installed.get("streams", ()):
                stream.flush_job(job)
        state = d.get("logs")
        if state and state[1]:
            job.logs.append(f"[runtime: {state[1]} more lines ({state[2]} bytes) dropped: over "
                            f"max_log_lines={self.limits.lines} / max_log_bytes={self.limits.size}]")


@on_reset
def uninstall() -> None:
    """Take the capture out of this process: the root handler, and the stream wrappers
    (unwrapped where they still are sys.stdout/sys.stderr)."""
    installed = Logs._installed
    if not installed:
        return
    logging.getLogger().removeHandler(installed["handler"])
    for stream in installed["streams"]:
        if getattr(sys, stream._label) is stream:
            setattr(sys, stream._label, stream._real)
    installed.clear()
