"""The worker's own log lines about jobs: one per attempt that did not succeed (and per
success at DEBUG), joinable to the job and its trace, as text or JSON."""

from __future__ import annotations

import json
import logging

from helpers import wait_until


def test_a_failed_job_gets_one_worker_line_with_its_id_task_status_duration_and_trace(
        client, receiver, worker, caplog):
    caplog.set_level(logging.DEBUG, "runtime")
    worker.start(otlp_endpoint=receiver.url)
    failed = client.wait(client.queue_job("tasks_example.work.fail", {"message": "no disk"}), timeout_s=10)
    ok = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    lines = [r for r in caplog.records if r.name == "runtime.worker" and getattr(r, "job_id", None)]
    (bad,) = [r for r in lines if r.job_id == failed.id]
    (good,) = [r for r in lines if r.job_id == ok.id]
    trace_id = failed.report["trace"]["trace_id"]
    assert bad.levelno == logging.WARNING and good.levelno == logging.DEBUG
    text = bad.getMessage()
    assert text.startswith(f"job {failed.id} tasks_example.work.fail failed after 0.0")
    assert text.endswith(f": ValueError: no disk [trace_id={trace_id}]"), text
    assert (bad.task, bad.status, bad.queue, bad.trace_id, bad.error_type) == (
        "tasks_example.work.fail", "failed", "default", trace_id, "ValueError")
    assert 0 <= bad.duration_s < 1


def test_log_format_json_gives_one_object_per_line_with_the_jobs_fields(client, workers):
    job_id = client.queue_job("tasks_example.work.fail", {"message": "token=hunter2 \x1b[2J"})
    proc = workers.start("--burst", "--log-format", "json")
    assert proc.wait(30) == 0
    docs = [json.loads(line) for line in workers.log(proc).splitlines() if line.strip()]  # every line is JSON
    (line,) = [d for d in docs if d.get("job_id") == job_id]
    assert line["level"] == "WARNING" and line["status"] == "failed" and line["task"] == "tasks_example.work.fail"
    assert line["error_type"] == "ValueError" and isinstance(line["duration_s"], float)
    assert line["worker_id"] and line["time"].endswith("Z") and line["logger"] == "runtime.worker"
    assert "hunter2" not in json.dumps(docs) and "\x1b" not in workers.log(proc)  # masked, escaped
    assert wait_until(lambda: client.get_job(job_id).status == "failed", 5)


def test_log_format_json_makes_the_workers_last_word_json_too(cli_env):
    """A worker refused at start (a task module that does not import) says so in one JSON
    line, as its log lines are, with the import's error in it."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "runtime", "worker", "--burst", "--log-format", "json",
                        "--tasks", "nosuchmod_for_json"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [json.loads(line) for line in r.stderr.splitlines()]  # every line is JSON
    assert lines[-1]["level"] == "ERROR" and "nosuchmod_for_json" in lines[-1]["message"]
