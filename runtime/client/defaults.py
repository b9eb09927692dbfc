"""The module-level functions of ``runtime`` (``queue_job``, ``get_job``, ``wait``...), on a
default client: built from the environment on first use (``RUNTIME_REDIS_URL``, or the
embedded server), again after a fork; a worker sets its own for the tasks it runs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

from ..job import Job
from ..resets import on_reset
from .client import Client

_default: Client | None = None
_default_pid: int | None = None


def default_client() -> Client:
    """The process's Client from the environment, made on first use (again after a fork)."""
    global _default, _default_pid
    if _default is None or _default_pid != os.getpid():
        _default, _default_pid = Client(), os.getpid()
    return _default


def set_default_client(client: Client | None) -> Client | None:
    """Use ``client`` for the module-level functions (None: build one on next use);
    returns the one used before (a worker puts it back when it stops)."""
    global _default, _default_pid
    before = _default if _default_pid == os.getpid() else None
    _default, _default_pid = client, os.getpid()
    return before


@on_reset
def forget_default_client() -> None:
    """Build the default client again on next use."""
    set_default_client(None)


def queue_job(path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """:meth:`Client.queue_job` on the default client."""
    return default_client().queue_job(path, params, **kwargs)


def queue_jobs(path: str, params_list: Iterable[Mapping[str, Any] | None], **kwargs: Any) -> list[str]:
    """:meth:`Client.queue_jobs` on the default client."""
    return default_client().queue_jobs(path, params_list, **kwargs)


def get_job(job_id: str) -> Job:
    """:meth:`Client.get_job` on the default client."""
    return default_client().get_job(job_id)


@overload
def wait(ids: str, timeout_s: float | None = None) -> Job: ...  # type: ignore[overload-overlap]


@overload
def wait(ids: Sequence[str], timeout_s: float | None = None) -> list[Job]: ...


def wait(ids: str | Sequence[str], timeout_s: float | None = None) -> Job | list[Job]:
    """:meth:`Client.wait` on the default client."""
    return default_client().wait(ids, timeout_s)
