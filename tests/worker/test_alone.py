"""A job rescued from a worker that died while running it waits in its queue, shown as
queued, until a worker that runs nothing takes it (it then runs alone); busy workers go
on taking the jobs behind it. Past one visibility timeout a busy worker takes it too, and
runs it once its pool has drained (claim.lua), so it never waits for ever."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS
from helpers import wait_until

from runtime.client import Client


def _running_in_a_process(client: Client, workers: Any, tmp_path: Path) -> tuple[str, Any]:
    """A job (dashtasks.gated on ``tmp_path/j``) running in a worker process, and that
    process (the test kills it)."""
    (tmp_path / "j").mkdir()
    job = client.queue_job("dashtasks.gated", {"folder": str(tmp_path / "j"), "steps": 1})
    proc = workers.start("--greenlets", "2", task_modules=DASH_TASKS)
    began = client.broker.keys.job(job)
    wait_until(lambda: client.redis.hget(began, "began") in ("1", b"1"), 20, "the job to begin in the worker process")
    return job, proc


def _kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _requeued(client: Client, job: str) -> None:
    wait_until(lambda: any("worker lost, requeued" in (h.get("note") or "") for h in client.get_job(job).history),
               20, "the reaper to requeue the job")


def _busy_worker(client: Client, worker: Any, tmp_path: Path, **settings: Any) -> tuple[Any, str]:
    """An in-process worker serving "busy" and "default", running a job gated on
    ``tmp_path/b`` (it holds that worker until the test writes ``go-1`` there)."""
    (tmp_path / "b").mkdir()
    held = client.queue_job("dashtasks.gated", {"folder": str(tmp_path / "b"), "steps": 1}, queue="busy")
    w = worker.start(greenlets=3, queues=("busy", "default"), task_modules=DASH_TASKS, **settings)
    wait_until(lambda: client.get_job(held).status.value == "started", 10, "the busy worker's job to start")
    return w, held


def test_a_rescued_job_waits_queued_for_an_idle_worker_and_busy_workers_keep_working(
        client: Client, workers: Any, worker: Any, tmp_path: Path) -> None:
    job, proc = _running_in_a_process(client, workers, tmp_path)
    busy, held = _busy_worker(client, worker, tmp_path)
    _kill(proc)
    _requeued(client, job)
    # the busy worker leaves it queued and goes on with the jobs behind it
    quick = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(5)])
    assert [j.result for j in client.wait(quick, timeout_s=15)] == [i + 1 for i in range(5)]
    rescued = client.get_job(job)
    assert rescued.status.value == "queued" and rescued.attempt == 1 and rescued.lost == 1
    assert job not in busy.slots.jobs
    # a worker that runs nothing takes it and runs it alone
    idle = worker.start(greenlets=2, queues=("default",), task_modules=DASH_TASKS)
    wait_until(lambda: client.get_job(job).status.value == "started", 10, "the idle worker to claim it")
    assert client.get_job(job).worker == idle.id
    (tmp_path / "j" / "go-1").touch()
    (tmp_path / "b" / "go-1").touch()
    done = client.wait([job, held], timeout_s=15)
    assert [j.status.value for j in done] == ["success", "success"]
    assert done[0].attempt == 2 and done[0].worker == idle.id


def test_a_rescued_job_no_idle_worker_takes_is_taken_by_a_busy_one_after_the_visibility_timeout(
        client: Client, workers: Any, worker: Any, tmp_path: Path) -> None:
    job, proc = _running_in_a_process(client, workers, tmp_path)
    busy, held = _busy_worker(client, worker, tmp_path, visibility_timeout_s=2.0)
    _kill(proc)
    _requeued(client, job)
    # claimed while the busy worker's job still runs, it waits for that job to end
    wait_until(lambda: client.get_job(job).status.value == "started", 15, "the busy worker to claim it")
    assert client.get_job(held).status.value == "started" and client.get_job(job).worker == busy.id
    (tmp_path / "b" / "go-1").touch()
    (tmp_path / "j" / "go-1").touch()
    done = client.wait([held, job], timeout_s=15)
    assert [j.status.value for j in done] == ["success", "success"] and done[1].attempt == 2
    # it ran alone: it began once the busy worker's job had ended
    assert done[1].started_at >= done[0].ended_at
