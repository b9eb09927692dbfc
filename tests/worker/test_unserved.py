"""A worker never fails a job whose task it does not serve (issue 16, finding 7): the job
goes back to its queue for a worker that serves it, and ends failed (reason unserved)
only after ``unserved_timeout_s``."""

from __future__ import annotations

import json
import re

import pytest
from helpers import cli, wait_until


def test_a_job_an_old_worker_does_not_serve_waits_for_a_new_worker_that_does(client, worker, settings):
    """A rolling deploy: the old worker lacks the new task; the new worker runs it."""
    old = worker.start(task_modules="tasks_example")
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})

    def handed_back():
        j = client.get_job(job_id)
        return j if j.status == "retry" and j.reason == "unserved" else None
    wait_until(handed_back, 10, "the job handed back")
    worker.stop(old)  # the deploy goes on (and the job stays put while we look at it)
    j = client.get_job(job_id)
    assert j.status == "retry" and j.retries == 0 and j.meta["unserved"]["worker"] == old.id and j.meta["unserved"]["count"] >= 1
    assert "outside the allowed task modules (tasks_example)" in j.exc_message
    shown = cli(settings, "job", job_id)
    assert shown.exit_code == 0 and "status    retry (unserved)" in shown.stdout
    assert re.search(r"waiting   for a worker that serves testtasks\.add: handed back \d+ times? since \S+, "
                     rf"last by {old.id}; ends failed \(unserved\) if none serves it by \S+", shown.stdout)
    assert "not served by this worker; back in the queue in" in shown.stdout
    new = worker.start(task_modules="tasks_example,testtasks")
    done = client.wait(job_id, timeout_s=15)
    assert (done.status, done.result, done.retries, done.worker) == ("success", 3, 0, new.id)
    assert done.reason is None and done.exc_message is None
    assert [h["status"] for h in done.history][:3] == ["queued", "claimed", "retry"]  # never started


@pytest.mark.parametrize("path, served, why", [
    ("testtasks.add", "tasks_example", "outside the allowed task modules"),
    ("testtasks.added_later", "tasks_example,testtasks", "module 'testtasks' has no 'added_later'"),
    ("tasks_example.newmodule.task", "tasks_example", "no module named 'tasks_example.newmodule'"),
])
def test_a_job_no_worker_serves_ends_failed_unserved_after_the_timeout(client, worker, path, served, why):
    job_id = client.queue_job(path, {}, check=False)
    worker.start(task_modules=served, unserved_timeout_s=1.5)
    job = client.wait(job_id, timeout_s=15)
    assert (job.status, job.reason, job.exc_type) == ("failed", "unserved", "runtime.errors.TaskNotServed")
    assert job.exc_message.startswith(f"no worker served task {path!r} within 1.5 s (unserved_timeout_s)")
    assert why in job.exc_message
    retries = [h for h in job.history if h["status"] == "retry"]
    assert retries and all("not served by this worker" in h["note"] for h in retries)
    assert job.history[-1]["status"] == "failed" and job.retries == 0
    ended, first = job.history[-1]["at"], retries[0]["at"]
    assert 1.5 <= ended - first < 5
    assert "unserved" not in job.meta  # a requeue starts a new wait
    assert json.loads(json.dumps(job.meta)) == job.meta


def test_a_requeued_unserved_job_waits_afresh(client, worker):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    w = worker.start(task_modules="tasks_example", unserved_timeout_s=1.0)
    assert client.wait(job_id, timeout_s=15).reason == "unserved"
    worker.stop(w)
    client.requeue(job_id)
    worker.start(task_modules="tasks_example", unserved_timeout_s=30)
    wait_until(lambda: client.get_job(job_id).status == "retry", 10, "the requeued job handed back")
    j = client.get_job(job_id)
    assert j.meta["unserved"]["count"] == 1 and j.meta["unserved"]["until"] - j.meta["unserved"]["since"] == 30


def test_a_burst_worker_does_not_wait_for_the_jobs_it_handed_back(client, worker, settings):
    """--burst exits once nothing it can run is left: an unserved job stays queued (for a
    worker that serves it) and does not hold the burst for unserved_timeout_s."""
    served = client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 3)
    unserved = client.queue_job("tasks_example.newmodule.task", {}, check=False)
    later = client.queue_job("testtasks.add", {"a": 2, "b": 2}, delay=1.0)  # a delayed job it serves: waited for
    w = worker.burst(task_modules="tasks_example,testtasks")
    assert not worker.alive(w) and [j.status for j in client.store.get_many(served)] == ["success"] * 3
    assert client.get_job(later).status == "success"
    assert client.get_job(unserved).status == "retry" and unserved in w.handed_back
    assert w.jobs_done == 4  # the jobs it ran: not the one it handed back
