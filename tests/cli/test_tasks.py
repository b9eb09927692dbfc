"""Tasks through the CLI (issue 16): task modules checked at worker start and by
``runtime check`` (finding 2), only tasks are tasks (finding 3), enqueue checks what it
can (finding 6)."""

from __future__ import annotations

import json
import re

from helpers import cli, rt

BROKEN = {
    "brokenpkg/__init__.py": "",
    "brokenpkg/fine.py": "def ok() -> int:\n    return 1\n",
    "brokenpkg/sub/__init__.py": "",
    "brokenpkg/sub/bad.py": "import json\n\nimport nosuchdep  # only the workers' image would have it\n",
}


def _write(task_dir, files):
    for name, text in files.items():
        task_dir.write(name, text)


def _queued(client) -> int:
    return sum(client.reader.queues()["counts"].values())


# ---- finding 2: fail at start, not at the first job ----------------------------------------

def test_a_task_module_that_fails_to_import_stops_the_worker_at_start_with_its_traceback(cli_env, task_dir):
    _write(task_dir, BROKEN)
    r = rt(cli_env, "worker", "--burst", "--tasks", "brokenpkg", cwd=task_dir.path)
    assert r.returncode == 2, r.stderr
    assert "Traceback (most recent call last)" in r.stderr and "import nosuchdep" in r.stderr
    assert r.stderr.splitlines()[-1] == ("error: task module 'brokenpkg.sub.bad' failed to import: "
                                         "ModuleNotFoundError: No module named 'nosuchdep'")


def test_a_tasks_typo_stops_the_worker_with_one_line(settings):
    r = cli(settings, "worker", "--burst", "--tasks", "tasks_example,tasks_exmaple")
    assert r.exit_code == 2
    assert r.stderr == ("error: task module 'tasks_exmaple' not found (no module named 'tasks_exmaple'); "
                        "check task_modules (--tasks / RUNTIME_TASK_MODULES)\n")


def test_a_task_option_typo_stops_the_worker_at_start(settings, task_dir):
    task_dir.write("optmod.py", """
        from runtime import task

        @task(timeout=5)
        def slow() -> None: ...
    """)
    r = cli(settings, "worker", "--burst", "--tasks", "optmod")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1] == ("error: task module 'optmod' failed to import: TaskOptionError: optmod.slow: "
                                         "unknown task option 'timeout'; did you mean 'timeout_s'?")
    task_dir.write("valmod.py", """
        from runtime import task

        @task(max_retries="3")
        def typed() -> None: ...
    """)
    r = cli(settings, "worker", "--burst", "--tasks", "valmod")
    assert r.exit_code == 2 and "task option max_retries must be an int >= 0, got '3'" in r.stderr


def test_the_worker_logs_the_tasks_it_serves_and_imports_them_after_patching_gevent(cli_env, task_dir):
    task_dir.write("patchprobe.py", """
        import pathlib

        import gevent.monkey

        pathlib.Path("patched-at-import").write_text(str(gevent.monkey.is_module_patched("socket")))

        def probe() -> None: ...
    """)
    r = rt(cli_env, "worker", "--burst", "--tasks", "tasks_example,patchprobe", cwd=task_dir.path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if "serving" in x)
    assert re.search(r"serving \d+ tasks from tasks_example, patchprobe: patchprobe\.probe, "
                     r"tasks_example\.files\.WordCount, tasks_example\.files\.analyse_source, ", line), line
    assert "tasks_example.work.noop" in line and "set_progress" not in line and ".task," not in line
    assert (task_dir.path / "patched-at-import").read_text() == "True"


def test_check_lists_the_tasks_or_exits_2_without_redis(cli_env, task_dir):
    env = {k: v for k, v in cli_env.items() if k != "RUNTIME_REDIS_URL"}  # it must not need one
    ok = rt(env, "check", "--tasks", "tasks_example", cwd=task_dir.path)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert "tasks_example.files.analyse_source(path)  [timeout_s=60]" in lines
    assert "tasks_example.work.flaky(fail_times=2)  [max_retries=3  retry_delay_s=0.2]" in lines
    assert re.fullmatch(r"ok: \d+ tasks in 3 modules of tasks_example", lines[-1])
    assert not any("set_progress" in x or "current_job" in x for x in lines)
    data = json.loads(rt(env, "check", "--tasks", "tasks_example", "--json", cwd=task_dir.path).stdout)
    assert {"path": "tasks_example.work.noop", "kind": "function", "params": "()", "options": {}} in data["tasks"]
    _write(task_dir, BROKEN)
    bad = rt(env, "check", "--tasks", "brokenpkg", cwd=task_dir.path)
    assert bad.returncode == 2 and "import nosuchdep" in bad.stderr and bad.stdout == ""
    assert bad.stderr.splitlines()[-1].startswith("error: task module 'brokenpkg.sub.bad' failed to import")
    assert not (task_dir.path / ".runtime").exists()  # no embedded server was started


# ---- finding 3: only tasks are tasks -------------------------------------------------------

def test_a_callable_imported_into_a_task_module_is_not_a_task(cli_env, settings, client, worker, task_dir):
    task_dir.write("mymod.py", """
        from os import getenv, system
        from shutil import rmtree

        def ok() -> str:
            return "ok"
    """)
    pwned = task_dir.path / "PWNED"
    params = json.dumps({"command": f"touch {pwned}"})
    refused = rt(cli_env, "enqueue", "mymod.system", params, cwd=task_dir.path)
    assert refused.returncode == 2
    assert refused.stderr == ("error: TaskNotAllowed: 'mymod.system' is not a task: it is posix.system, imported "
                              "into 'mymod' rather than defined in a task module (tasks_example, testtasks, mymod); "
                              "mark it @task to make it one\n")
    assert _queued(client) == 0
    # queued unchecked, the worker refuses it too, for good
    ids = [cli(settings, "enqueue", path, args, "--no-check").stdout.strip()
           for path, args in (("mymod.system", params), ("mymod.getenv", '{"key": "RUNTIME_REDIS_URL"}'),
                              ("mymod.rmtree", json.dumps({"path": str(task_dir.path)})))]
    good = client.queue_job("mymod.ok")
    worker.burst(task_modules="mymod")
    for job in client.wait(ids, timeout_s=10):
        assert (job.status, job.reason, job.exc_type) == ("failed", "bad-task", "runtime.errors.TaskNotAllowed")
        assert job.result is None and "imported into 'mymod'" in job.exc_message
    assert client.wait(good, timeout_s=10).result == "ok"
    assert not pwned.exists() and task_dir.path.exists()


def test_a_helper_imported_from_its_own_package_is_not_a_task_for_run_or_enqueue(settings, client, task_dir):
    """The producer and `runtime run` judge a path as a worker of its module would: what
    ``mypkg.tasks`` imports from ``mypkg.utils`` is not a task of ``mypkg.tasks``."""
    victim = task_dir.path / "victim"
    victim.mkdir()
    task_dir.write("mypkg/__init__.py", "")
    task_dir.write("mypkg/utils.py", """
        import shutil

        def wipe(path: str) -> str:
            shutil.rmtree(path)
            return "wiped"
    """)
    task_dir.write("mypkg/tasks.py", """
        from mypkg.utils import wipe

        def real() -> str:
            return "real"
    """)
    params = json.dumps({"path": str(victim)})
    for command in ("run", "enqueue"):
        r = cli(settings, command, "mypkg.tasks.wipe", params)
        assert r.exit_code == 2 and "'mypkg.tasks.wipe' is not a task: it is mypkg.utils.wipe, imported into " \
            "'mypkg.tasks'" in r.stderr, (command, r.stderr)
    assert victim.exists() and _queued(client) == 0
    assert cli(settings, "run", "mypkg.tasks.real").stdout.strip() == '"real"'


# ---- finding 6: enqueue checks what it can -------------------------------------------------

def test_enqueue_checks_the_task_path_and_params_with_a_did_you_mean(settings, client):
    typo = cli(settings, "enqueue", "tasks_example.work.io_wiat")
    assert typo.exit_code == 2
    assert typo.stderr == ("error: TaskNotFound: unknown task path 'tasks_example.work.io_wiat': module "
                           "'tasks_example.work' has no 'io_wiat'; did you mean tasks_example.work.io_wait?\n")
    assert cli(settings, "enqueue", "tasks_example.work.nosuch").exit_code == 2
    misspelled = cli(settings, "enqueue", "testtasks.resize", '{"path": "a.png", "widht": 3}')
    assert misspelled.exit_code == 2
    assert misspelled.stderr == ("error: params do not match testtasks.resize(path, width, height=None): unknown "
                                 "param 'widht' (did you mean 'width'?); missing required param 'width'\n")
    missing = cli(settings, "enqueue", "testtasks.resize", '{"width": 3}')
    assert missing.exit_code == 2 and "missing required param 'path'" in missing.stderr
    assert _queued(client) == 0  # nothing was queued
    unchecked = cli(settings, "enqueue", "testtasks.resize", '{"widht": 3}', "--no-check")
    assert unchecked.exit_code == 0 and unchecked.stdout.strip().startswith("default:")
    # a module this producer cannot import at all (another codebase's): queued unchecked
    elsewhere = cli(settings, "enqueue", "othercodebase.tasks.resize", '{"widht": 3}')
    assert elsewhere.exit_code == 0 and elsewhere.stderr == ""
    assert _queued(client) == 2
