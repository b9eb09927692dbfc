"""What a new user meets in the first hour and on a bad day, through the CLI: a job never
hidden, secrets never printed, a terminal never driven by what a job wrote, one-line
errors, the shapes and words of the output."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import redis
from helpers import cli, rt, wait_until

from runtime.status import Status


def test_enqueue_wait_that_times_out_prints_the_id_and_says_no_worker_listens(settings, client):
    r = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--wait", "0.3")
    job_id = r.stdout.strip()
    assert r.exit_code == 6 and client.get_job(job_id).status == "queued"
    assert "warning: no live worker takes jobs from queue 'default'" in r.stderr
    assert f"error: job {job_id} did not end within 0.3 s; it is still queued (runtime job {job_id}; " \
           f"runtime cancel {job_id})" in r.stderr
    js = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--wait", "0.3", "--json", "-q", "other")
    shown = json.loads(js.stdout)
    assert js.exit_code == 6 and shown["status"] == "queued" and shown["queue"] == "other"
    assert client.get_job(shown["id"]).path == "testtasks.add" and "queue 'other'" in js.stderr


def test_the_redis_password_is_never_printed(cli_env):
    env = {**cli_env, "RUNTIME_REDIS_URL": "redis://:s3cretpw@127.0.0.1:1/0"}
    r = rt(env, "jobs")
    assert r.returncode == 4 and "s3cretpw" not in r.stderr + r.stdout
    assert r.stderr.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:1/0: ")
    bad = rt({**cli_env, "RUNTIME_MONGODB_URL": "mongo://user:hunter22@host/db"}, "jobs")
    assert bad.returncode == 2 and "hunter22" not in bad.stderr and "user:***@" in bad.stderr


def test_otlp_credentials_stay_out_of_the_worker_log(settings, client, workers):
    client.queue_job("testtasks.add", {"a": 1, "b": 1})
    proc = workers.start("--burst", "--otlp-endpoint", "http://collector:t0psecret@127.0.0.1:1")
    proc.wait(30)
    log = workers.log(proc)
    assert "exporting spans over OTLP" in log and "collector:***@127.0.0.1:1" in log and "t0psecret" not in log


def test_what_a_job_wrote_cannot_drive_the_terminal(settings, client, worker):
    evil = "title\x1b]0;pwned\x07 clear\x1b[2J bidi\u202eend"
    job_id = client.queue_job("tasks_example.work.fail", {"message": evil})
    worker.burst()
    text = cli(settings, "job", job_id).stdout
    assert "\x1b" not in text and "\u202e" not in text
    assert "title\\x1b]0;pwned\\x07 clear\\x1b[2J bidi\\u202eend" in text
    js = cli(settings, "job", job_id, "--json").stdout  # the same value for a JSON reader, inert for a terminal
    assert "\x1b" not in js and "\u202e" not in js and json.loads(js)["exc_message"] == evil


def test_a_mongodb_url_without_pymongo_is_one_line(cli_env, tmp_path):
    (tmp_path / "pymongo").mkdir()  # a pymongo that is not installed, as in a fresh virtualenv
    (tmp_path / "pymongo" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pymongo'\", name='pymongo')\n")
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([str(tmp_path), cli_env["PYTHONPATH"]])}
    r = rt(env, "--mongodb", "mongodb://127.0.0.1:1/x", "jobs")
    assert r.returncode == 2 and r.stderr == (
        "error: a MongoDB URL needs pymongo, which is not installed: pip install pymongo\n")


def test_enqueue_on_a_full_redis_is_one_line(cli_env, full_redis):
    r = rt({**cli_env, "RUNTIME_REDIS_URL": full_redis}, "enqueue", "testtasks.add", '{"a": 1, "b": 2}')
    assert r.returncode == 4 and r.stdout == "" and r.stderr == (
        "error: Redis is full (its used memory is over maxmemory): nothing was written; "
        "free memory or raise maxmemory (runtime info)\n")
    assert redis.Redis.from_url(full_redis).dbsize() == 0


def test_a_worker_says_how_many_jobs_it_ran_not_counting_the_ones_it_returned(client, worker, caplog):
    caplog.set_level(logging.INFO, "runtime")
    running = client.queue_job("testtasks.sleep", {"seconds": 0.3})
    w = worker.start(greenlets=1, prefetch=3)
    wait_until(lambda: client.get_job(running).status == "started", 10, "the first job to start")
    behind = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    wait_until(lambda: all(j.status == "started" for j in client.store.get_many(behind)), 10, "prefetch")
    worker.stop(w)
    assert [j.status for j in client.store.get_many(behind)] == ["interrupt"] * 3
    assert w.jobs_done == 1 and f"worker {w.id} stopped: ran 1 job" in caplog.text


def test_version_help_and_words(settings, client, worker):
    from importlib.metadata import version
    assert cli(settings, "--version").stdout == f"runtime {version('runtime')}\n"
    for command, choices in (("jobs", "[queued|started|"), ("requeue", "[abort|cancel|failed|")):
        assert choices in cli(settings, command, "--help").stdout
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    assert cli(settings, "cancel", job_id).stdout == "cancelled 1 job\n"
    again = cli(settings, "cancel", job_id)
    assert again.exit_code == 7 and f"cannot cancel job {job_id}: its status is cancel" in again.stderr
    assert cli(settings, "requeue", job_id).stdout == "requeued 1 job\n"
    worker.burst()
    shown = cli(settings, "job", job_id).stdout
    assert f"(timeout {settings.default_timeout_s:g} s)" in shown  # the timeout it ran under
    slow = client.queue_job("testtasks.too_slow", {"seconds": 0.01})
    worker.burst()
    assert "(timeout 0.3 s)" in cli(settings, "job", slow).stdout and client.get_job(slow).status == Status.SUCCESS
    missing = cli(settings, "job", slow, "--artifact", "profile")
    assert missing.exit_code == 3 and f"job {slow} has no artifact 'profile'" in missing.stderr


def test_the_demo_says_which_failures_are_expected(client, worker, capsys):
    import sysconfig

    from runtime.cli.demo import QUEUE, TASK, print_summary, summarize
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    bad = next((p for p in (stdlib / "lib2to3/tests/data/py2_test_grammar.py", stdlib / "test/badsyntax_3131.py",
                            stdlib / "test/tokenizedata/badsyntax_3131.py") if p.exists()), None)
    if bad is None:
        pytest.skip("this Python ships none of the known invalid test files")
    ids = client.queue_jobs(TASK, [{"path": str(bad)}, {"path": str(stdlib / "os.py")}], queue=QUEUE)
    worker.burst(queues=(QUEUE,), task_modules=("tasks_example",))
    summary = summarize(client.wait(ids, timeout_s=10), 1.0)
    assert summary["by_status"] == {"failed": 1, "success": 1} and summary["expected_failures"] == 1
    print_summary(summary)
    assert "1 of these failures is expected: the standard library ships test files" in capsys.readouterr().out


def test_bad_durations_urls_and_folders_are_one_line(cli_env, settings, client):
    for bad in ("nan", "inf", "1e300", "-1"):
        r = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--wait", bad)
        assert r.exit_code == 2 and "Invalid value for '--wait'" in r.stderr, bad
    assert sum(client.reader.queues()["counts"].values()) == 0  # refused before anything was queued
    url = rt({**cli_env, "RUNTIME_REDIS_URL": "redis://user:pw@[::1:1/0"}, "jobs")
    assert url.returncode == 2 and url.stderr == "error: bad Redis URL 'redis://user:***@[::1:1/0': Invalid IPv6 URL\n"
    env = {k: v for k, v in cli_env.items() if k != "RUNTIME_REDIS_URL"}
    nowhere = rt(env, "jobs", cwd=Path("/proc/self"))  # no folder can be made here
    assert nowhere.returncode == 2 and len(nowhere.stderr.splitlines()) == 1
    assert nowhere.stderr.startswith("error: cannot create the embedded Redis's folder /proc/")
    assert cli(settings, "enqueue", "testtasks.add", "null").stderr.endswith("got null\n")


def test_a_password_with_an_unencoded_at_sign_is_still_masked():
    from runtime.redact import mask
    assert mask("at redis://user:S3C@RETPW@127.0.0.1:1/0 now") == "at redis://user:***@127.0.0.1:1/0 now"
    assert mask("mongodb://h/db?password=x: Error 111") == "mongodb://h/db?password=***: Error 111"


def test_a_worker_with_no_task_modules_or_one_that_exits_at_import_stops_with_exit_2(settings, task_dir):
    none = cli(settings, "worker", "--burst", "--tasks", "")
    assert none.exit_code == 2 and none.stderr.startswith("error: no task modules: ")
    task_dir.write("quitter.py", "import sys\n\nsys.exit(0)\n")
    quits = cli(settings, "worker", "--burst", "--tasks", "quitter")
    assert quits.exit_code == 2 and "task module 'quitter' failed to import: SystemExit: 0" in quits.stderr


def test_what_a_job_prints_reaches_the_workers_console_escaped(settings, client, workers):
    job_id = client.queue_job("testtasks.print_text", {"text": "title\x1b]0;pwned\x07 clear\x1b[2J"})
    proc = workers.start("--burst")
    proc.wait(30)
    log = workers.log(proc)
    assert "title\\x1b]0;pwned\\x07 clear\\x1b[2J" in log and "\x1b" not in log
    assert client.get_job(job_id).status == "success"


def test_a_worker_starts_on_a_full_redis_and_says_it_is_full(cli_env, full_redis):
    r = rt({**cli_env, "RUNTIME_REDIS_URL": full_redis}, "worker", "--burst")
    assert r.returncode == 0, r.stderr
    assert f"Redis at {full_redis} is full (used memory over maxmemory, policy noeviction)" in r.stderr
    assert "Traceback" not in r.stderr
