"""runtime: an observable task queue and worker runtime for Python.

    from runtime import queue_job, wait, run_task
    job_id = queue_job("tasks_example.files.analyse_source", {"path": "/usr/lib/python3.11/json/__init__.py"})
    print(wait(job_id, timeout_s=10).result)

Names are imported lazily, so ``runtime worker`` can monkey-patch gevent before Redis,
ssl or anything else is imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "queue_job", "queue_jobs", "get_job", "wait", "set_progress", "spawn", "run_task", "task",
    "periodic", "Client", "Job", "Status", "Settings", "load_settings", "Retry", "TaskRun",
    "TaskQueueError", "JobNotFound", "InvalidParams", "WaitTimeout", "BrokerUnavailable",
    "TaskError", "TaskNotFound", "TaskNotAllowed",
]

_WHERE = {
    "queue_job": "client", "queue_jobs": "client", "get_job": "client", "wait": "client",
    "Client": "client", "set_progress": "context", "spawn": "context", "run_task": "local", "TaskRun": "local",
    "task": "tasks", "periodic": "schedule", "Job": "job", "Status": "status", "Settings": "settings",
    "load_settings": "settings", "Retry": "errors", "TaskQueueError": "errors",
    "JobNotFound": "errors", "InvalidParams": "errors", "WaitTimeout": "errors",
    "BrokerUnavailable": "errors", "TaskError": "errors", "TaskNotFound": "errors", "TaskNotAllowed": "errors",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(import_module(f"runtime.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
