"""Progress reporting while a job runs, and run_task (a task in this process)."""

from __future__ import annotations

from helpers import wait_until

from runtime import run_task


def test_progress_is_stored_while_running_and_at_the_end(client, worker):
    worker.start(progress_interval_s=0.2)
    job_id = client.queue_job("tasks_example.work.steps", {"n": 5, "step_s": 0.1})
    mid = wait_until(lambda: (j := client.get_job(job_id)).progress and j.progress < 1 and j, 10, "progress")
    assert "steps" in mid.progress_message
    job = client.wait(job_id, timeout_s=10)
    assert job.progress == 1.0 and job.progress_message == "5/5 steps"


def test_run_task_runs_in_process_with_status_and_timings():
    ok = run_task("tasks_example.work.count_primes", {"limit": 1000})
    assert ok.ok and ok.result == 168 and ok.wall_s > 0
    bad = run_task("tasks_example.work.fail", {"message": "x"})
    assert bad.status == "failed" and isinstance(bad.exception, ValueError) and "ValueError: x" in bad.traceback
    steps = run_task("tasks_example.work.steps", {"n": 2, "step_s": 0})
    assert steps.progress == 1.0
