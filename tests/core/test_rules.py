"""Pure rules: params encoding, the status table, settings, task options, units."""

from __future__ import annotations

import decimal
import io
import math
import re
import traceback
from datetime import UTC, datetime

import pytest

from runtime.errors import ConfigError, InvalidParams, JobTooLarge, TaskNotAllowed, TaskNotFound, TaskOptionError
from runtime.job import encode_params
from runtime.settings import load_settings
from runtime.status import FINAL, TRANSITIONS, Status, allowed_from
from runtime.tasks import resolve, task


@pytest.mark.parametrize("value, key", [
    ({"when": datetime.now(UTC)}, "params['when']"),
    ({"amount": decimal.Decimal("1.5")}, "params['amount']"),
    ({"blob": b"\x00"}, "params['blob']"),
    ({"tags": {"a", "b"}}, "params['tags']"),
    ({"fh": io.StringIO()}, "params['fh']"),
    ({"fn": lambda: 1}, "params['fn']"),
    ({"x": math.nan}, "params['x']"),
    ({"deep": {"list": [1, 2, {"bad": object()}]}}, "params['deep']['list'][2]['bad']"),
])
def test_params_that_are_not_json_are_refused_naming_the_key(value, key):
    with pytest.raises(InvalidParams) as err:
        encode_params(value, 1_000_000)
    assert err.value.key == key
    assert key in str(err.value)


def test_params_must_be_an_object_and_fit_the_size_limit():
    with pytest.raises(InvalidParams, match="JSON object"):
        encode_params([1, 2], 1000)
    with pytest.raises(JobTooLarge, match="over the limit"):
        encode_params({"s": "x" * 2000}, 1000)
    assert encode_params({"ok": [1, 2.5, "é", None, True, {"a": []}]}, 1000) == '{"ok":[1,2.5,"é",null,true,{"a":[]}]}'


def test_final_statuses_only_move_by_requeue_and_started_cannot_be_skipped():
    for s in FINAL - {Status.MOVED}:
        assert TRANSITIONS[s] == {Status.QUEUED}
    # a moved job lives on under its new id: requeuing its old one would run it twice
    assert TRANSITIONS[Status.MOVED] == frozenset()
    assert allowed_from(Status.MOVED) == allowed_from(Status.STARTED) - {Status.STARTED}
    assert Status.SUCCESS not in TRANSITIONS[Status.QUEUED]
    assert Status.INTERRUPT in TRANSITIONS[Status.STARTED]
    assert allowed_from(Status.STARTED) == {Status.INTERRUPT, Status.QUEUED, Status.RETRY}


def test_settings_layering_and_validation(tmp_path):
    cfg = tmp_path / "runtime.toml"
    cfg.write_text('queues = ["high", "default"]\ngreenlets = 7\n')
    s = load_settings({"greenlets": 9}, env={"RUNTIME_GRACE_S": "3", "RUNTIME_TTL_S": "success:60"}, config_file=cfg)
    assert s.queues == ("high", "default") and s.greenlets == 9 and s.grace_s == 3.0
    assert s.ttl_s["success"] == 60 and s.ttl_s["failed"] == 7 * 86400
    with pytest.raises(ConfigError, match="unknown setting 'greenletz'"):
        load_settings({"greenletz": 1}, env={})
    with pytest.raises(ConfigError, match="RUNTIME_GREENLETS"):
        load_settings(env={"RUNTIME_GREENLETS": "many"})
    with pytest.raises(ConfigError, match="not final"):
        load_settings(env={"RUNTIME_TTL_S": "started:1"})


def test_unknown_task_option_fails_at_import_with_a_hint():
    with pytest.raises(TaskOptionError, match="did you mean 'max_retries'"):
        @task(max_retry=3)
        def f() -> None: ...


def test_resolve_imports_only_allowed_modules():
    with pytest.raises(TaskNotAllowed, match="outside the allowed task modules"):
        resolve("os.system", ["tasks_example"])
    with pytest.raises(TaskNotFound, match="has no 'nope'"):
        resolve("tasks_example.work.nope", ["tasks_example"])
    with pytest.raises(TaskNotFound, match="no module named"):
        resolve("tasks_example.nomodule.f", ["tasks_example"])
    assert resolve("tasks_example.work.noop", ["tasks_example"]).path == "tasks_example.work.noop"


def test_only_functions_and_classes_defined_in_a_task_module_or_marked_are_tasks(task_dir):
    """Issue 16, finding 3: what a task module imports is not a task, unless marked."""
    task_dir.write("helpers3.py", """
        def helper(x: int) -> int:
            return x

        def other(x: int) -> int:
            return x
    """)
    task_dir.write("tasks3.py", """
        import functools
        from os import system
        from helpers3 import helper, other
        from runtime import task

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(**params):
                return fn(**params)
            return wrapper

        @logged
        def wrapped(a: int) -> int:  # wraps keeps __module__: defined here
            return a

        @task(timeout_s=5)
        @logged
        def marked_wrapped(a: int) -> int:
            return a

        exported = task(max_retries=1)(helper)   # marked: a task here
        hidden_system = logged(system)            # wraps keeps posix as its module

        class Job:
            def run(self, params):
                return params

        class NoRun:
            pass

        def _private() -> None: ...
    """)
    mods = ("tasks3",)
    assert resolve("tasks3.wrapped", mods).signature is not None
    assert resolve("tasks3.marked_wrapped", mods).timeout_s == 5
    assert resolve("tasks3.exported", mods).max_retries == 1
    assert resolve("tasks3.Job", mods).is_class
    for path, error, says in [
        ("tasks3.system", TaskNotAllowed, "it is posix.system, imported into 'tasks3' rather than defined in a task module"),
        ("tasks3.hidden_system", TaskNotAllowed, "it is posix.system, imported into 'tasks3'"),
        ("tasks3.other", TaskNotAllowed, "it is helpers3.other, imported into 'tasks3'"),
        ("tasks3.task", TaskNotAllowed, "it is runtime.tasks.task"),
        ("tasks3._private", TaskNotAllowed, "its name is private"),
        ("tasks3.NoRun", TaskNotFound, "has no run(self, params) method"),
        ("tasks3.functools", TaskNotFound, "names a module, not a function or class"),
    ]:
        with pytest.raises(error, match=re.escape(says)) as err:
            resolve(path, mods)
        assert not err.value.elsewhere, path  # a worker fails such a job (never hands it back)
    assert resolve("tasks3.helper", mods).max_retries == 1  # task() marked the function itself
    # an unmarked function is a task where its own module is a task module
    assert resolve("tasks3.other", ("tasks3", "helpers3")).target.__name__ == "other"


def test_a_task_module_that_raises_at_import_keeps_its_real_error(task_dir):
    """Issue 16, finding 2: not 'unknown task path' for a module that exists and fails."""
    task_dir.write("needsdep.py", "import nosuchdep\n\ndef f() -> None: ...\n")
    task_dir.write("divides.py", "x = 1 / 0\n")
    with pytest.raises(TaskNotFound) as err:
        resolve("needsdep.f", ["needsdep"])
    assert str(err.value) == "task module 'needsdep' failed to import: ModuleNotFoundError: No module named 'nosuchdep'"
    assert isinstance(err.value.__cause__, ModuleNotFoundError) and not err.value.elsewhere
    assert "import nosuchdep" in "".join(traceback.format_exception(err.value))
    with pytest.raises(TaskNotFound, match="'divides' failed to import: ZeroDivisionError: division by zero") as err:
        resolve("divides.f", ["divides"])
    again = pytest.raises(TaskNotFound, resolve, "divides.f", ["divides"])  # remembered: the same error
    assert str(again.value) == str(err.value) and isinstance(again.value.__cause__, ZeroDivisionError)
    with pytest.raises(TaskNotFound, match="no module named 'nosuchmod'") as err:
        resolve("nosuchmod.f", ["nosuchmod"])
    assert err.value.elsewhere  # may exist in another worker's code


def test_task_option_values_are_checked_at_import():
    for options, says in [({"timeout_s": 0}, "timeout_s must be a number of seconds > 0"),
                          ({"max_retries": 1.5}, "max_retries must be an int >= 0"),
                          ({"retry_on": "ValueError"}, "retry_on must be an exception class"),
                          ({"retry_backoff": -1}, "retry_backoff must be a number > 0")]:
        with pytest.raises(TaskOptionError, match=says):
            task(**options)(lambda: None)
    assert task(retry_on=ValueError)(lambda: None).__runtime_options__["retry_on"] == (ValueError,)


def test_a_missing_task_is_not_imported_again_for_a_while(monkeypatch):
    import importlib

    from runtime import tasks
    with pytest.raises(TaskNotFound):
        resolve("tasks_example.nomodule2.f", ["tasks_example"])
    assert "tasks_example.nomodule2.f" in tasks._not_found

    def no_import(name, *args, **kwargs):
        raise AssertionError(f"{name} imported again")
    monkeypatch.setattr(importlib, "import_module", no_import)
    with pytest.raises(TaskNotFound, match="no module named"):
        resolve("tasks_example.nomodule2.f", ["tasks_example"])


def test_sizes_and_durations_read_and_print_as_people_write_them():
    from runtime.units import fmt_bytes, fmt_seconds, parse_bytes
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes(100) == 100
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")
    assert fmt_bytes(536870912) == "512.0 MiB" and fmt_bytes(None) == "-" and fmt_bytes(3 * 2**40) == "3072.0 GiB"
    assert fmt_seconds(0.0123) == "12.3 ms" and fmt_seconds(2.5) == "2.50 s" and fmt_seconds(None) == "-"


def test_a_result_over_max_job_bytes_is_refused_without_copies_of_it():
    """Issue 19, finding 7: a 10 MB result grew the worker by 30 MiB on its way to
    ``bad-result`` (its JSON text, then an encoded copy of that). A str is refused before
    any copy; anything else costs what json's encoder makes (its pieces, joined: about
    twice the text), no encoded copy on top (which made it three times)."""
    import tracemalloc

    from runtime.errors import ResultNotJSON
    from runtime.job import encode_result
    text = "é" * (5 * 2**20)  # 10 MiB in UTF-8
    items = ["é" * 1024] * 5120  # its JSON text: 5 MiB of characters, 10 MiB in UTF-8
    for result, most in ((text, 2**16), (items, 12 * 2**20)):
        tracemalloc.start()
        try:
            with pytest.raises(ResultNotJSON, match="over max_job_bytes=1048576"):
                encode_result(result, 2**20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < most, (type(result).__name__, peak / 2**20)
