"""The ``runtime`` command group: global options, one-line errors with named exit codes,
and what every command shares (settings, the client, JSON output).

Exit codes (runtime.errors.ExitCode):
  0 OK; 1 ERROR (any other runtime error); 2 USAGE (bad arguments, params, task path or
  settings; a task module that fails to import); 3 NOT_FOUND (no such job, queue or
  schedule, or the job has no such artifact); 4 UNAVAILABLE (Redis or MongoDB unreachable,
  or Redis full); 5 JOB_FAILED (run, enqueue --wait: the job did not succeed); 6 TIMEOUT
  (enqueue --wait deadline passed: the job id is printed, the job stays queued); 7
  NOT_ALLOWED (not allowed now: cancel of a running job, embedded stop under live
  workers, forget of a schedule still run, run-now of a removed one); 8 RECYCLED (worker:
  a worker process stopped to be recycled; its supervisor replaces it).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from ..errors import (
    BrokerUnavailable,
    ConfigError,
    ExitCode,
    InvalidParams,
    InvalidTransition,
    JobNotFound,
    ScheduleNotFound,
    ScheduleRefused,
    TaskError,
    TaskImportError,
    TaskQueueError,
    WaitTimeout,
)
from ..redact import json_safe, mask, printable
from ..settings import Settings, load_settings

P = ParamSpec("P")
T = TypeVar("T")


class NotFound(TaskQueueError):
    """Something asked for by name does not exist (exit code NOT_FOUND)."""


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Print a line of text output: secrets masked, controls escaped (runtime.redact), so
    what a job wrote (an error message, a log line) cannot drive the terminal."""
    click.echo(printable(mask(text)), err=err, nl=nl)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``error: message`` on stderr (as :func:`echo`; a JSON log line where the
    worker logs JSON) and exit with ``code``."""
    from .logformat import json_error, logs_json
    if logs_json():
        click.echo(json_error(message), err=True)
    else:
        echo(f"error: {message}", err=True)
    sys.exit(code)


def _mongo_error(exc: Exception) -> NoReturn:
    from ..store.mongo.connection import short_error, translate
    mapped = translate(exc)  # MongoDB's errors: one line too, never a traceback
    if mapped is None:
        fail(f"MongoDB: {type(exc).__name__}: {short_error(exc)}", ExitCode.ERROR)
    fail(str(mapped), ExitCode.USAGE if isinstance(mapped, ConfigError) else ExitCode.UNAVAILABLE)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn runtime's errors into one line on stderr and a named exit code."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (JobNotFound, ScheduleNotFound, NotFound) as exc:
            fail(str(exc), ExitCode.NOT_FOUND)
        except BrokerUnavailable as exc:
            fail(str(exc), ExitCode.UNAVAILABLE)
        except WaitTimeout as exc:
            fail(str(exc), ExitCode.TIMEOUT)
        except (InvalidTransition, ScheduleRefused) as exc:
            fail(str(exc), ExitCode.NOT_ALLOWED)
        except TaskImportError as exc:  # a task module that failed to import: its traceback first
            from .logformat import logs_json
            if logs_json():  # one JSON line, the traceback in it
                fail(str(exc) + ("\n" + exc.traceback if exc.traceback else ""), ExitCode.USAGE)
            echo(exc.traceback, err=True, nl=False)
            fail(str(exc), ExitCode.USAGE)
        except (InvalidParams, ConfigError) as exc:
            fail(str(exc), ExitCode.USAGE)
        except TaskError as exc:  # a path that names no task (enqueue's check)
            fail(f"{type(exc).__name__}: {exc}", ExitCode.USAGE)
        except TaskQueueError as exc:
            fail(f"{type(exc).__name__}: {exc}", ExitCode.ERROR)
        except Exception as exc:
            if type(exc).__module__.startswith("redis."):
                _redis_error(exc)
            if not type(exc).__module__.startswith(("pymongo", "bson")):
                raise
            _mongo_error(exc)
    return wrapper


def _redis_error(exc: Exception) -> None:
    """Exit with one line for a Redis error that a command let through: Redis (a cluster)
    out of reach, a Redis Cluster node behind a plain URL (runtime_error). Returns for any
    other error, which is raised as it is (a bug: its traceback is wanted)."""
    from ..broker.connection import runtime_error
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(Ctx) if ctx is not None else None
    client = obj._client.redis if obj is not None and obj._client is not None else None
    mapped = runtime_error(exc, client)
    if mapped is not None:
        fail(str(mapped), ExitCode.USAGE if isinstance(mapped, ConfigError) else ExitCode.UNAVAILABLE)


class Ctx:
    """The group's options, and the settings and client built from them (once)."""

    def __init__(self, overrides: dict[str, Any], config: str | None) -> None:
        self.overrides = overrides
        self.config = config
        self._client: Any = None

    def settings(self, **more: Any) -> Settings:
        """Settings with the group's options and ``more`` (a subcommand's flags) applied."""
        given = {k: v for k, v in more.items() if v is not None}  # an unset subcommand flag keeps the group's
        return load_settings({**self.overrides, **given}, config_file=self.config)

    def client(self, middleware: bool = True) -> Any:
        """The command's Client (runtime.client.Client), closed with the command; without
        ``middleware`` for a command that neither enqueues nor shows a report (faster)."""
        if self._client is None:
            from ..client import Client
            self._client = Client(self.settings(), middleware=middleware)
            ctx = click.get_current_context(silent=True)
            mongo = self._client.mongo
            if mongo is not None and ctx is not None:  # closed at the command's end, exit not delayed
                from ..store.mongo.connection import close_before_exit
                ctx.find_root().call_on_close(lambda: close_before_exit(mongo.store.client))
        return self._client


YEAR_S = 365 * 86_400.0


class Seconds(click.FloatRange):
    """A duration option: a finite number of seconds, 0 or more, at most a year."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0, max=YEAR_S)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:  # NaN: no range holds it
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


SECONDS = Seconds()


def parse_params(text: str | None) -> dict[str, Any]:
    """Params given on the command line (a JSON object). Raises InvalidParams."""
    if not text:
        return {}
    if any("\udc80" <= c <= "\udcff" for c in text):  # argv of a C locale: the bytes were UTF-8
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            pass
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParams(f"params are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = {type(None): "null", bool: "a boolean", list: "an array", str: "a string"}.get(type(value), "a number")
        raise InvalidParams(f"params must be a JSON object like '{{\"a\": 1}}', got {kind}")
    return value


def out(data: Any) -> None:
    """Print ``data`` as indented JSON (terminal controls as JSON escapes: runtime.redact)."""
    click.echo(json_safe(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\n" + (__doc__ or "").split("\n\n", 1)[1])
@click.option("--redis", "redis_url", metavar="URL", help="redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL [env RUNTIME_REDIS_URL; default: the embedded server under .runtime/]")
@click.option("--prefix", "key_prefix", metavar="PREFIX", help="prefix of every Redis key [env RUNTIME_KEY_PREFIX; default rt]")
@click.option("--mongodb", "mongodb_url", metavar="URL", help="keep and read job documents in this MongoDB [env RUNTIME_MONGODB_URL; default: Redis only]")
@click.option("--config", type=click.Path(dir_okay=False),
              help="settings file [default: runtime.toml of this folder or the nearest parent with one]")
@click.version_option(package_name="runtime", prog_name="runtime", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, key_prefix: str | None, mongodb_url: str | None,
        config: str | None) -> None:
    """runtime: an observable task queue and worker runtime."""
    ctx.obj = Ctx({"redis_url": redis_url, "key_prefix": key_prefix, "mongodb_url": mongodb_url}, config)
