"""``run_task``: run one task in this process, now, for a REPL or a script."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .context import JobContext, current_job
from .execution import AttemptResult, format_traceback, safe_str
from .job import encode_params, loads, new_job_id
from .middleware import Chain
from .resets import on_reset
from .settings import Settings, load_settings
from .status import Status
from .tasks import home_modules, resolve


@dataclass
class TaskRun:
    """What ``run_task`` returns: the status, the result (success) or the exception, and
    timings: ``wall_s`` (seconds of wall time), ``cpu_s`` (process CPU seconds)."""

    path: str
    status: Status
    result: Any
    exception: BaseException | None
    traceback: str | None
    wall_s: float
    cpu_s: float
    progress: float | None = None
    progress_message: str | None = None
    report: dict[str, Any] | None = None
    logs: list[str] | None = None
    reason: str | None = None  # bad-task, bad-params, exception... (see runtime.execution)
    #: what middleware stored by name (a profile...), as stored with a job
    artifacts: dict[str, str] = field(default_factory=dict)
    chain: Chain | None = field(default=None, repr=False)

    def render(self, name: str, html: bool = False) -> str | None:
        """Artifact ``name`` rendered by the middleware that stored it, or None without one."""
        if name not in self.artifacts or self.chain is None:
            return None
        return self.chain.render_artifact(name, self.artifacts[name], html)

    def load(self, name: str) -> Any:
        """Artifact ``name`` as the object its middleware stored (a profiler's session...),
        or None without one."""
        if name not in self.artifacts or self.chain is None:
            return None
        return self.chain.load_artifact(name, self.artifacts[name])

    def describe(self) -> str:
        """What the middleware measured, as ``runtime job`` shows it (timing, memory, the
        heap diff table...): one ``label  text`` line each."""
        if self.chain is None or not self.report:
            return ""
        from .job import Job
        job = Job(id="local", path=self.path, status=self.status, report=self.report, artifacts=self.artifacts)
        return "\n".join(f"{label:10} {text}" for label, text in self.chain.describe(job))

    @property
    def profile(self) -> Any:
        """The profile of a profiled run (a pyinstrument Session), or None: ``load("profile")``."""
        return self.load("profile")

    def profile_text(self) -> str | None:
        """The profile as pyinstrument's console text, or None (as ``render("profile")``)."""
        return self.render("profile")

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status.value, "result": self.result,
                "exception": None if self.exception is None
                else f"{type(self.exception).__name__}: {safe_str(self.exception)}",
                "traceback": self.traceback, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "progress": self.progress, "progress_message": self.progress_message,
                "report": self.report, "logs": self.logs}


def run_task(path: str, params: Mapping[str, Any] | None = None, settings: Settings | None = None) -> TaskRun:
    """Run the task at ``path`` with ``params`` in this process and return a TaskRun.

    It runs through the same middleware as a worker (``settings.middleware``), so the
    TaskRun carries the same report (timing...) and captured logs. No Redis is needed and
    nothing is stored. Params go through the same JSON check as at
    enqueue (raises InvalidParams naming the bad key). A path outside ``task_modules`` may
    be run here (that rule guards workers, not the caller's own process), but it must name
    a task (runtime.tasks.not_a_task: judged under ``task_modules`` and the module
    the path names). Timeouts are not
    enforced outside a gevent worker. Retries are not attempted: a task that asks for one
    reports status retry.
    """
    settings = settings or load_settings()
    params_json = encode_params(dict(params or {}), settings.max_job_bytes)
    local = settings.replace(task_modules=home_modules(path, settings.task_modules))
    try:  # resolved before the middleware, which read the task's options (profile=True...)
        resolve(path, local.task_modules)
    except Exception:  # noqa: BLE001 - run_attempt reports a bad path as the outcome
        pass
    ctx = JobContext(new_job_id(), path, "local", 1, loads(params_json))
    ctx.started_at = ctx.due_at = time.time()
    chain = _chain(settings)
    token = current_job.set(ctx)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        res: AttemptResult = chain.run_attempt(ctx, local, params_json, enforce_timeout=False)
    finally:
        current_job.reset(token)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return TaskRun(path, res.status, res.result, res.exc,
                   format_traceback(res.exc) if res.exc is not None else None, wall, cpu,
                   ctx.progress, ctx.progress_message, ctx.report, ctx.logs, res.reason, ctx.artifacts, chain)


_chains: dict[str, Chain] = {}


@on_reset
def forget_chains() -> None:
    """Stop and forget run_task's chains."""
    for chain in _chains.values():
        chain.call("on_worker_stop", None)
    _chains.clear()


def _chain(settings: Settings) -> Chain:
    """One middleware chain per configuration (all of its settings: middleware read
    theirs when made), kept for the process (REPL loops)."""
    key = repr(settings)
    chain = _chains.get(key)
    if chain is None:
        chain = _chains[key] = Chain.from_settings(settings)
        chain.call("on_worker_start", None)
    return chain
