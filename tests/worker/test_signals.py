"""Signals heard while a CPU-bound job holds the gevent hub: the second SIGINT/SIGTERM
(or the supervisor's SIGUSR2) interrupts it at once, in a worker process of its own and
under a supervisor."""

from __future__ import annotations

import json
import signal
import time

from helpers import wait_until

#: Far longer than any wait below: a graceful stop would outlast the test.
GRACE_S = 120


def _worker_entry(client):
    """The (one) worker's registry entry, supervisors left out; None before it beats."""
    return next((e for e in client.broker.registry.entries() if e.get("kind") != "supervisor"), None)


def _spinning(client, job_id, where=" in spin"):
    """Is the worker running ``job_id`` in the function ``where`` names (its stack, from
    the heartbeat)?"""
    e = _worker_entry(client)
    running = json.loads(e["running"]) if e else []
    return any(r["id"] == job_id and any(where in f for f in r["stack"][:1]) for r in running)


def _state(client):
    e = _worker_entry(client)
    return e["state"] if e else None


def _assert_interrupted_and_requeued(client, job_id):
    job = client.get_job(job_id)
    assert job.status == "interrupt" and job.retries == 0 and job.exc_type == "runtime.errors.JobInterrupt"
    assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "interrupt"]
    assert client.reader.queues()["queues"]["default"]["ready"] == 1  # requeued at once


def test_a_second_sigint_interrupts_a_cpu_bound_job_at_once(client, workers):
    job_id = client.queue_job("testtasks.spin", {"seconds": 600})
    proc = workers.start("--greenlets", "2", grace_s=GRACE_S)
    wait_until(lambda: _spinning(client, job_id), 20, "the job to spin")
    proc.send_signal(signal.SIGINT)
    # heard at once, though the job holds the hub: the heartbeat thread shows the stop
    wait_until(lambda: _state(client) == "stopping", 5, "the first SIGINT to be heard")
    assert _spinning(client, job_id)  # a graceful stop: the job runs on
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0, workers.log(proc)
    assert time.monotonic() - sent < 10  # not the grace period
    _assert_interrupted_and_requeued(client, job_id)
    assert "interrupting running jobs" in workers.log(proc)


def test_a_second_signal_to_a_supervisor_interrupts_its_workers_cpu_bound_job(client, workers):
    job_id = client.queue_job("testtasks.spin", {"seconds": 600})
    proc = workers.start("--processes", "1", "--greenlets", "2", grace_s=GRACE_S)
    wait_until(lambda: _spinning(client, job_id), 30, "the job to spin")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: _state(client) == "stopping", 5, "the worker to hear the forwarded SIGTERM")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # forwarded to the worker as SIGUSR2
    assert proc.wait(15) == 0, workers.log(proc)
    assert time.monotonic() - sent < 10
    _assert_interrupted_and_requeued(client, job_id)


def test_a_job_is_interrupted_in_its_own_code_never_inside_a_library(client, workers):
    """A second signal that lands while the job runs library code (here "logging", where an
    exception between a lock's acquire and its try would leave the lock held) raises
    nothing there; the worker looks again until the job is back in its own code."""
    job_id = client.queue_job("testtasks.spin_in_library", {"library_s": 4.0, "seconds": 600})
    proc = workers.start("--greenlets", "2", grace_s=GRACE_S)
    in_library = lambda: _spinning(client, job_id, " in busy")  # noqa: E731
    wait_until(in_library, 20, "the job to spin inside the library")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: _state(client) == "stopping", 5, "the first SIGINT to be heard")
    assert in_library()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0, workers.log(proc)
    _assert_interrupted_and_requeued(client, job_id)
    frames = [line for line in client.get_job(job_id).traceback.splitlines()
              if line.lstrip().startswith("File") and "signals.py" not in line]  # the handler's own
    assert frames[-1].endswith("in spin"), frames[-1]


def test_the_handler_raises_only_into_the_tasks_own_frames():
    from runtime import run_task
    assert run_task("testtasks.interruptible_here").result == [True, False]
