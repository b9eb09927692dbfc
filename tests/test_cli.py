"""The CLI as a user runs it: human output, --json, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import wait_until


def rt(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "runtime", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_enqueue_job_jobs_queues(cli_env, workers):
    r = rt(cli_env, "enqueue", "testtasks.add", '{"a": 20, "b": 22}', "--queue", "default")
    assert r.returncode == 0
    job_id = r.stdout.strip()
    workers.start()
    done = rt(cli_env, "enqueue", "testtasks.add", '{"a": 1, "b": 1}', "--wait", "10", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["result"] == 2
    wait_until(lambda: json.loads(rt(cli_env, "job", job_id, "--json").stdout)["status"] == "success", 10, "success")
    human = rt(cli_env, "job", job_id).stdout
    assert "result    42" in human and "history" in human and "started" in human
    listed = json.loads(rt(cli_env, "jobs", "--status", "success", "--json").stdout)
    assert {j["id"] for j in listed} >= {job_id}
    assert "default" in rt(cli_env, "queues").stdout
    assert json.loads(rt(cli_env, "queues", "--json").stdout)["counts"]["success"] == 2
    assert "running" in rt(cli_env, "workers").stdout


def test_errors_are_one_line_with_named_exit_codes(cli_env):
    bad_json = rt(cli_env, "enqueue", "testtasks.add", "{a: 1}")
    assert bad_json.returncode == 2 and bad_json.stderr.startswith("error: params are not valid JSON")
    assert "Traceback" not in bad_json.stderr
    missing = rt(cli_env, "job", "nope")
    assert missing.returncode == 3 and missing.stderr.strip() == "error: no job 'nope' (never queued, or its document expired)"
    down = rt({**cli_env, "RUNTIME_REDIS_URL": "redis://127.0.0.1:1/0"}, "jobs")
    assert down.returncode == 4 and down.stderr.startswith("error: cannot reach Redis") and len(down.stderr.splitlines()) == 1
    job_id = rt(cli_env, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--delay", "60").stdout.strip()
    assert rt(cli_env, "abort", job_id).returncode == 7
    assert rt(cli_env, "cancel", job_id).returncode == 0
    assert rt(cli_env, "cancel", job_id).returncode == 7


def test_run_prints_the_result_in_process(cli_env):
    ok = rt(cli_env, "run", "testtasks.add", '{"a": 2, "b": 3}')
    assert ok.returncode == 0 and ok.stdout.strip() == "5"
    failed = rt(cli_env, "run", "tasks_example.work.fail", '{"message": "nope"}')
    assert failed.returncode == 5 and "ValueError: nope" in failed.stderr


def test_requeue_all_failed_of_a_path(cli_env, workers, client):
    ids = client.queue_jobs("tasks_example.work.fail", [{}] * 3)
    workers.start()
    client.wait(ids, timeout_s=10)
    r = rt(cli_env, "requeue", "--path", "tasks_example.work.fail")
    assert r.returncode == 0 and "requeued 3" in r.stdout
    assert all(j.attempt == 2 for j in client.wait(ids, timeout_s=10))
