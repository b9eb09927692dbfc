"""The producer's check at enqueue (issue 16, finding 6): path and params checked when the
task can be imported here, once per path; skipped when it cannot be, or on request."""

from __future__ import annotations

import logging

import pytest

from runtime.client import check as check_module
from runtime.errors import InvalidParams, TaskNotAllowed, TaskNotFound


def _queued(client) -> int:
    return sum(client.reader.queues()["counts"].values())


def test_queue_jobs_checks_every_params_dict_and_resolves_the_task_once(client, monkeypatch):
    calls = []
    real = check_module.resolve
    monkeypatch.setattr(check_module, "resolve", lambda *a: calls.append(a) or real(*a))
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(300)])
    client.queue_job("testtasks.add", {"a": 1, "b": 2})
    assert len(ids) == 300 and len(calls) == 1
    with pytest.raises(InvalidParams, match=r"unknown param 'bb' \(did you mean 'b'\?\)"):
        client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 5 + [{"a": 1, "bb": 1}])
    assert _queued(client) == 301 and len(calls) == 1  # none of the batch was queued
    assert len(client.queue_jobs("testtasks.add", [{"a": 1, "bb": 1}], check=False)) == 1
    with pytest.raises(TaskNotFound, match="did you mean testtasks.add"):
        client.queue_job("testtasks.ad", {})
    with pytest.raises(TaskNotAllowed, match="it is os.getenv"):
        client.queue_job("testtasks.getenv", {"key": "HOME"})
    assert client.queue_job("testtasks.ad", {}, check=False)


def test_a_task_the_producer_cannot_import_is_queued_unchecked(client, task_dir, caplog):
    caplog.set_level(logging.WARNING, "runtime.client")
    assert client.queue_job("othercodebase.tasks.f", {"any": 1})  # another codebase's: silently
    assert caplog.records == []
    task_dir.write("workeronly.py", "import gpu_library_only_workers_have\n\ndef f() -> None: ...\n")
    task_dir.write("pkg16/__init__.py", "")
    task_dir.write("pkg16/work.py", "def f() -> None: ...\n")
    assert client.queue_job("workeronly.f", {"x": 1})
    assert client.queue_job("pkg16.wrok.f", {"x": 1})
    assert client.queue_job("pkg16.wrok.f", {"x": 2})  # warned once per path
    assert [r.getMessage() for r in caplog.records] == [
        "workeronly.f queued unchecked: importing workeronly failed here (ModuleNotFoundError: "
        "No module named 'gpu_library_only_workers_have')",
        "pkg16.wrok.f queued unchecked: no module named 'pkg16.wrok' here (did you mean pkg16.work?)"]
    assert _queued(client) == 4


def test_a_workers_own_client_imports_no_module_a_job_names(worker, task_dir):
    task_dir.write("sideeffect16.py", "raise SystemExit('imported!')\n")
    w = worker.make()
    assert w.client.queue_job("sideeffect16.f", {})  # not imported: not checked
    with pytest.raises(InvalidParams):
        w.client.queue_job("testtasks.add", {"a": 1})  # its own tasks are checked
