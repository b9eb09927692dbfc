"""The CLI as a user runs it: human output, --json, one-line errors, exit codes (in this
process through click's runner; as ``python -m runtime`` where the process matters)."""

from __future__ import annotations

import json

import pytest
from helpers import cli, rt, wait_until

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_enqueue_job_jobs_queues(settings, worker):
    r = cli(settings, "enqueue", "testtasks.add", '{"a": 20, "b": 22}', "--queue", "default")
    assert r.exit_code == 0
    job_id = r.stdout.strip()
    worker.start()
    done = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 1}', "--wait", "10", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["result"] == 2
    wait_until(lambda: json.loads(cli(settings, "job", job_id, "--json").stdout)["status"] == "success", 10, "success")
    human = cli(settings, "job", job_id).stdout
    assert "result    42" in human and "history" in human and "started" in human
    attempts = json.loads(cli(settings, "job", job_id, "--json").stdout)["attempts"]
    assert [(a["number"], a["status"]) for a in attempts] == [(1, "success")]
    listed = json.loads(cli(settings, "jobs", "--status", "success", "--json").stdout)
    assert {j["id"] for j in listed["jobs"]} >= {job_id} and listed["total"] == 2 and listed["next"] is None
    assert all(j["history"] is None for j in listed["jobs"])  # not read for a listing: null, not []
    assert "default" in cli(settings, "queues").stdout
    assert json.loads(cli(settings, "queues", "--json").stdout)["counts"]["success"] == 2
    assert "running" in cli(settings, "workers").stdout


def test_jobs_pages_with_a_cursor(client, settings):
    ids = sorted(client.queue_jobs("testtasks.add", [{"a": i, "b": 0} for i in range(5)]), reverse=True)
    first = cli(settings, "jobs", "-n", "3")  # one change time: by id, highest first
    assert first.exit_code == 0 and [line.split()[0] for line in first.stdout.splitlines()[1:4]] == ids[:3]
    assert first.stdout.splitlines()[-1].startswith("(3 of 5 jobs; next page: runtime jobs --before ")
    cursor = first.stdout.splitlines()[-1].split("--before ")[1].rstrip(")")
    rest = cli(settings, "jobs", "-n", "3", "--before", cursor)
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:-1]] == ids[3:]
    assert rest.stdout.splitlines()[-1] == "(2 of 5 jobs)"
    paged = json.loads(cli(settings, "jobs", "-n", "3", "--json").stdout)
    assert [j["id"] for j in paged["jobs"]] == ids[:3] and paged["total"] == 5 and paged["next"] == cursor
    for garbage in ("garbage", "nan:x", ":" + ids[0], "inf:x", "1:", ""):
        bad = cli(settings, "jobs", "--before", garbage)
        assert bad.exit_code == 2 and "bad cursor" in bad.stderr and "Traceback" not in bad.stderr, garbage
    assert cli(settings, "jobs", "-n", "0").exit_code == 2


def test_errors_are_one_line_with_named_exit_codes(cli_env, settings):
    """As ``python -m runtime`` (the console script's exit code and stderr), then in-process."""
    bad_json = rt(cli_env, "enqueue", "testtasks.add", "{a: 1}")
    assert bad_json.returncode == 2 and bad_json.stderr.startswith("error: params are not valid JSON")
    assert "Traceback" not in bad_json.stderr
    down = rt({**cli_env, "RUNTIME_REDIS_URL": "redis://127.0.0.1:1/0"}, "jobs")
    assert down.returncode == 4 and down.stderr.startswith("error: cannot reach Redis") and len(down.stderr.splitlines()) == 1
    missing = cli(settings, "job", "nope")
    assert missing.exit_code == 3 and missing.stderr.strip() == "error: no job 'nope' (never queued, or its document expired)"
    job_id = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--delay", "60").stdout.strip()
    assert cli(settings, "abort", job_id).exit_code == 7
    assert cli(settings, "cancel", job_id).exit_code == 0
    assert cli(settings, "cancel", job_id).exit_code == 7


def test_a_prefix_whose_brace_does_not_close_in_it_is_refused_and_an_id_naming_no_queue_is_no_job(settings):
    """Every key of a queue carries the queue's name as a Redis Cluster hash tag: a prefix
    with an unclosed '{' would spread a queue's keys over slots (a worker then failed every
    claim for ever on a cluster), so it is refused in one line; '{rt1}' (one slot for the
    whole deployment) is fine. An id with nothing before its ':' names no queue: no job."""
    for prefix in ("a{b", "{}x"):
        r = cli(settings, "--prefix", prefix, "enqueue", "testtasks.add", '{"a": 1, "b": 2}')
        assert r.exit_code == 2 and r.stderr.startswith(f"error: key_prefix {prefix!r}: a '{{' in it must close"), \
            r.stderr
        assert len(r.stderr.splitlines()) == 1
    job_id = cli(settings, "--prefix", "{tagged}", "enqueue", "testtasks.add", '{"a": 1, "b": 2}').stdout.strip()
    assert cli(settings, "--prefix", "{tagged}", "cancel", job_id).exit_code == 0
    for command in ("cancel", "abort", "requeue"):
        r = cli(settings, command, ":abc")
        assert r.exit_code == 3 and "no job ':abc'" in r.stderr, (command, r.stderr)


def test_run_prints_the_result_in_process(settings):
    ok = cli(settings, "run", "testtasks.add", '{"a": 2, "b": 3}')
    assert ok.exit_code == 0 and ok.stdout.strip() == "5"
    failed = cli(settings, "run", "tasks_example.work.fail", '{"message": "nope"}')
    assert failed.exit_code == 5 and "ValueError: nope" in failed.stderr


def test_requeue_all_failed_of_a_path(settings, worker, client):
    ids = client.queue_jobs("tasks_example.work.fail", [{}] * 3)
    worker.start()
    client.wait(ids, timeout_s=10)
    r = cli(settings, "requeue", "--path", "tasks_example.work.fail")
    assert r.exit_code == 0 and "requeued 3" in r.stdout
    assert all(j.attempt == 2 for j in client.wait(ids, timeout_s=10))


def test_a_worker_with_a_bad_middleware_order_exits_2_with_one_line(settings):
    r = cli(settings, "worker", "--burst", middleware="diagnostics.sentry.Sentry,diagnostics.tracing.Tracing")
    assert r.exit_code == 2 and r.stderr.startswith("error: middleware diagnostics.sentry.Sentry must come after")
    assert len(r.stderr.splitlines()) == 1


def test_a_bad_settings_file_is_one_line_for_every_command(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runtime.toml").write_text('middlewares = ["x"]\n')
    for args in (["jobs"], ["embedded", "stop"], ["embedded", "status"]):
        r = cli(settings, *args)
        assert r.exit_code == 2 and r.stderr == "error: runtime.toml: unknown setting 'middlewares' (did you mean 'middleware'?)\n", (args, r.stderr)


def test_job_hides_secret_values(settings, client):
    job_id = client.queue_job("testtasks.add", {"password": "hunter2", "session_id": "s3ss", "pin": "4321",
                                                "url": "redis://:pw9@cache/0", "spinner": "visible"}, check=False)
    for args in (("job", job_id), ("job", job_id, "--json"), ("jobs", "--json")):
        shown = cli(settings, *args).stdout
        assert not {"hunter2", "s3ss", "4321", "pw9"} & set(shown.replace('"', " ").replace(":", " ").split()), shown
        assert "hunter2" not in shown and "visible" in shown and "***" in shown


@pytest.mark.parametrize("args", [("events", "-n", "0"), ("events", "-n", "-1"), ("jobs", "--limit", "0"),
                                  ("worker", "--burst", "--prefetch", "-1")])
def test_counts_below_their_minimum_are_refused_with_exit_2(settings, args):
    r = cli(settings, *args)
    assert r.exit_code == 2 and "is not in the range" in r.stderr, (args, r.stdout, r.stderr)


def test_a_negative_prefetch_setting_is_refused():
    from runtime.errors import ConfigError
    from runtime.settings import load_settings
    with pytest.raises(ConfigError, match=r"prefetch >= 0 \(-1: as many as greenlets\), got 25 and -2"):
        load_settings({"prefetch": -2}, env={})


def test_move_prints_the_new_id_and_job_says_where_it_went(settings):
    job_id = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--delay", "60").stdout.strip()
    moved = cli(settings, "move", job_id, "--queue", "reports", "--priority", "4")
    new_id = moved.stdout.strip().split(" -> ")[1]
    assert moved.exit_code == 0 and new_id.startswith("reports:") and moved.stdout.startswith(f"{job_id} -> ")
    old = cli(settings, "job", job_id).stdout
    assert "  status    moved" in old and f"  moved to  {new_id} (its id in queue reports" in old
    new = cli(settings, "job", new_id).stdout
    assert "  queue     reports (priority 4)" in new and f"  moved     from {job_id}" in new
    assert cli(settings, "move", new_id, "--priority", "9").stdout.strip() == f"{new_id} (same id: priority 9)"
    queue = new_id.partition(":")[0]
    assert cli(settings, "move", new_id, "--queue", queue).stdout.strip() == \
        f"{new_id} (already in queue {queue}: nothing to change)"
    again = cli(settings, "move", job_id, "--queue", "reports")  # the same move again: the same id, said so
    assert again.exit_code == 0 and again.stdout.strip() == f"{job_id} already moved to {new_id}"
    assert json.loads(cli(settings, "move", job_id, "--queue", "reports", "--json").stdout) == \
        {"moved": {job_id: new_id}, "already_moved": [job_id]}
    assert cli(settings, "move", job_id, "--queue", "other").exit_code == 7  # moved: no longer waits
    assert cli(settings, "move", new_id).exit_code == 2
