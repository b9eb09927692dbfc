"""A bad schedule is refused before anything runs: at import for what ``@periodic`` can
see (params that are not JSON or do not bind), at worker start and in ``runtime check``
for the rest (runtime.toml's tables, names used twice, task paths): one line, exit 2."""

from __future__ import annotations

import pytest
from helpers import cli, rt, worker_env

from runtime.errors import ConfigError

TOML_MISTAKES = [
    ('cron = "*/5 * * *"', "bad cron '*/5 * * *'"),
    ('cron = "0 2 * * *"\ntz = "Nowhere/X"', "unknown time zone 'Nowhere/X'"),
    ('every = 5\nmissed = "sometimes"', "missed must be"),
    ('every = "5m"', "every must be a number of seconds"),
    ('every = 5\nmised = "once"', "unknown keys ['mised']"),
    ('every = 5\ntask = "badt.nope"', "badt"),
    ('every = 5\nparams = {x = 1}', "unknown param 'x'"),
    ('every = true', "every must be a number of seconds"),
    ('every = 5\ntz = "Europe/Paris"', "tz has no meaning with every"),
    ('every = 1e12', "every must be at least 0.1 seconds and at most 315360000 (10 years), got 1000000000000.0"),
]


def _toml(task_dir, body: str) -> None:
    lines = body.splitlines()
    task = next((x for x in lines if x.startswith("task =")), 'task = "testtasks.add"')
    if 'task = "badt' not in task and "x = 1" not in body:
        lines.append("params = {a = 1, b = 2}")
    rest = "\n".join(x for x in lines if not x.startswith("task ="))
    task_dir.write("runtime.toml", f"[schedules.nightly]\n{task}\n{rest}\n")


@pytest.mark.parametrize(("body", "said"), TOML_MISTAKES)
def test_runtime_check_refuses_a_bad_runtime_toml_schedule(settings, task_dir, monkeypatch, body, said):
    _toml(task_dir, body)
    monkeypatch.chdir(task_dir.path)
    r = cli(settings, "check", task_modules="testtasks")
    assert r.exit_code == 2, r.stdout
    assert said in r.stderr and "nightly" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _two_ticks(task_dir) -> None:
    task_dir.write("twoticks.py", """
        from runtime import periodic

        @periodic(every=2, name="tick")
        def one() -> None:
            pass

        @periodic(every=3, name="tick")
        def two() -> None:
            pass
        """)


def test_a_worker_with_a_bad_schedule_is_refused_at_start(settings, task_dir):
    """No worker that serves with no scheduler while `check` says ok: both refuse."""
    _two_ticks(task_dir)
    env = worker_env(settings, task_modules="testtasks,twoticks")
    for args in (("check",), ("worker", "--burst"), ("worker", "--burst", "--processes", "2")):
        r = rt(env, *args, cwd=task_dir.path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "two schedules are named 'tick'" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    _toml(task_dir, 'cron = "*/5 * * *"')
    r = rt(worker_env(settings, task_modules="testtasks"), "worker", "--burst", cwd=task_dir.path)
    assert r.returncode == 2 and "bad cron" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_runtime_check_lists_the_schedules_it_found(settings, task_dir, monkeypatch):
    task_dir.write("goodtick.py", """
        from runtime import periodic

        @periodic(every=2, name="tick", params={"n": 1})
        def tick(n: int = 0) -> int:
            return n
        """)
    _toml(task_dir, "every = 300")
    monkeypatch.chdir(task_dir.path)
    r = cli(settings, "check", task_modules="testtasks,goodtick")
    assert r.exit_code == 0, r.stderr
    assert "schedule tick: every 2 s -> goodtick.tick on queue default" in r.stdout
    assert "schedule nightly: every 300 s -> testtasks.add on queue default" in r.stdout


def test_periodic_refuses_params_that_are_not_json_or_do_not_bind():
    from datetime import timedelta

    from runtime import periodic

    def f(n: int = 0) -> None:
        pass

    with pytest.raises(ConfigError, match=r"schedule 'x': params\['when'\] is a timedelta, which is not JSON"):
        periodic(every=2, name="x", params={"when": timedelta(1)})(f)
    with pytest.raises(ConfigError, match=r"schedule 'y': params do not match .*unknown param 'x'"):
        periodic(every=2, name="y", params={"x": 1})(f)


SCHEDULE = 'task = "testtasks.add"\nevery = 5\nparams = {a = 1, b = 2}\n'
# runtime.toml files whose schedule would be ignored: refused, one line naming the mistake
MISPLACED = [
    (f"[runtime]\ngreenlets = 5\n[schedule.s1]\n{SCHEDULE}", "unknown table [schedule] (did you mean 'schedules'?)"),
    ("[runtime]\ngreenlets = 5\n[foo]\nx = 1\n", "unknown table [foo]:"),
    ("[runtime]\ngreenlets = 5\nschedules = {s1 = {task = \"testtasks.add\", every = 5}}\n",
     "schedules inside [runtime]"),
    (f"greenlets = 5\n[runtime]\nqueues = [\"default\"]\n[schedules.s1]\n{SCHEDULE}",
     "setting 'greenlets' is outside [runtime]"),
    (f"greenlets = 5\n[schedulez.s1]\n{SCHEDULE}", "unknown table [schedulez] (did you mean 'schedules'?)"),
    ("greenlet = 5\n", "unknown setting 'greenlet' (did you mean 'greenlets'?)"),
]


@pytest.mark.parametrize(("text", "said"), MISPLACED)
def test_runtime_check_refuses_an_unknown_or_misplaced_table_of_runtime_toml(settings, task_dir, monkeypatch,
                                                                               text, said):
    task_dir.write("runtime.toml", text)
    monkeypatch.chdir(task_dir.path)
    r = cli(settings, "check", task_modules="testtasks")
    assert r.exit_code == 2, r.stdout
    assert said in r.stderr and "runtime.toml" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_worker_refuses_to_start_with_a_misspelled_schedule_table(settings, task_dir):
    task_dir.write("runtime.toml", MISPLACED[0][0])
    r = rt(worker_env(settings, task_modules="testtasks"), "worker", "--burst", cwd=task_dir.path)
    assert r.returncode == 2 and "unknown table [schedule]" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_runtime_toml_with_runtime_and_schedules_tables_is_read(settings, task_dir, monkeypatch):
    task_dir.write("runtime.toml", f"[runtime]\ngreenlets = 5\n[schedules.s1]\n{SCHEDULE}")
    monkeypatch.chdir(task_dir.path)
    r = cli(settings, "check", task_modules="testtasks")
    assert r.exit_code == 0 and "schedule s1: every 5 s -> testtasks.add" in r.stdout, r.stderr


def test_runtime_check_refuses_a_schedule_name_with_an_at_sign(settings, task_dir, monkeypatch):
    task_dir.write("runtime.toml", f'[schedules."tick@1"]\n{SCHEDULE}')
    monkeypatch.chdir(task_dir.path)
    r = cli(settings, "check", task_modules="testtasks")
    assert r.exit_code == 2, r.stdout
    assert "schedule 'tick@1': a schedule name may not hold '@'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
