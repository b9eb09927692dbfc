"""What the tests share: settings for fast liveness, waiting on a condition with a deadline,
workers in-process and as real processes (stopped by pid), and the CLI run in-process
(click's runner) or as ``python -m runtime``."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import redis
from click.testing import CliRunner, Result

from runtime.settings import Settings, load_settings
from runtime.worker.state import WorkerState
from runtime.worker.worker import Worker

HERE = Path(__file__).parent
ROOT = HERE.parent

#: Fast liveness for tests: heartbeat 0.2 s, a worker is dead after 1 s.
FAST = {
    "heartbeat_interval_s": 0.2,
    "worker_ttl_s": 1.0,
    "reap_interval_s": 0.2,
    "grace_s": 5.0,
    "task_modules": "tasks_example,testtasks",
}


def wait_until(cond: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns a truthy value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def with_settings(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with ``overrides`` given as a command line or env gives them (strings
    such as ``middleware="a.B,c.D"`` or ``ttl_s="success:2"`` are coerced)."""
    base = {k: v for k, v in vars(settings).items() if k not in overrides}
    return load_settings({**base, **overrides}, env={})


class InProcess:
    """Workers run in this (gevent-patched) process, each in a greenlet of its own; every
    one still running is stopped at teardown (``stop_all``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running: list[tuple[Worker, Any]] = []

    def make(self, **overrides: Any) -> Worker:
        """A worker with parts of its own, on the test's settings with ``overrides``."""
        return Worker.from_settings(with_settings(self.settings, **overrides) if overrides else self.settings)

    def burst(self, **overrides: Any) -> Worker:
        """Run a worker until no job is ready, running or delayed; returns it."""
        w = self.make(**overrides)
        assert w.run(burst=True) == 0
        return w

    def start(self, **overrides: Any) -> Worker:
        """Start a worker in a greenlet and return it once it claims jobs."""
        w = self.make(**overrides)
        g = gevent.spawn(w.run)
        self.running.append((w, g))
        wait_until(lambda: w.state != WorkerState.STARTING or g.dead, 10, "the worker to start")
        assert not g.dead, g.exception
        return w

    def alive(self, w: Worker) -> bool:
        """Is ``w`` still running its loop?"""
        return any(x is w and not g.dead for x, g in self.running)

    def stop(self, w: Worker, hard: bool = False, timeout_s: float = 15.0) -> int:
        """Stop ``w`` as a signal would (``hard``: as a second one) and wait for its exit
        code."""
        g = next(g for x, g in self.running if x is w)
        w.stop(hard=hard)
        g.join(timeout_s)
        assert g.dead, "the worker did not stop"
        return int(g.value)

    def stop_all(self) -> None:
        for w, g in self.running:
            if not g.dead:
                w.stop(hard=True)
                w.stop(hard=True)
        for _, g in self.running:
            g.join(15)
            if not g.dead:
                g.kill()


def worker_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment of a worker or CLI process on ``settings`` (RUNTIME_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env.update({
        "RUNTIME_REDIS_URL": settings.redis_url or "",
        "RUNTIME_KEY_PREFIX": settings.key_prefix,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]),
    })
    for k, v in FAST.items():
        env["RUNTIME_" + k.upper()] = str(v)
    for k, v in extra.items():
        env["RUNTIME_" + k.upper()] = str(v)
    return env


class Processes:
    """Starts ``runtime worker`` processes and stops them all (by pid) at teardown."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, own_group: bool = False, **settings: Any) -> subprocess.Popen[bytes]:
        """``runtime worker ARGS`` with these settings; ``own_group``: in a new process
        group (so that a test can signal the group as a container runtime does)."""
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the process writes it
        proc = subprocess.Popen([sys.executable, "-m", "runtime", "worker", "--log-level", "DEBUG", *args],
                                env=worker_env(self.settings, **settings), stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.tmp, process_group=0 if own_group else None)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> subprocess.Popen[bytes]:
        """Wait until ``proc`` claims jobs (it logged its start), for tests that time
        jobs from their enqueue (a worker takes ~1 s to start on a slow machine)."""
        wait_until(lambda: " started: redis " in self.log(proc) or proc.poll() is not None, timeout_s)
        assert proc.poll() is None, self.log(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        """SIGKILL each worker; a supervisor gets two SIGTERMs first (its children stop at
        once, interrupting their jobs) so that no child outlives the test."""
        for p in self.procs:
            if p.poll() is None and self._supervises(p):
                p.send_signal(signal.SIGTERM)
                try:  # two signals sent at once may arrive as one
                    wait_until(lambda p=p: "supervisor got signal" in self.log(p) or p.poll() is not None, 5)
                except AssertionError:
                    pass
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.wait(10 if self._supervises(p) else 0)
                except subprocess.TimeoutExpired:
                    pass
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)

    @staticmethod
    def _supervises(p: subprocess.Popen[bytes]) -> bool:
        from runtime.cli.entry import supervises
        return supervises([str(a) for a in p.args[3:]])  # type: ignore[index]


def cli(settings: Settings, *args: str, **extra: Any) -> Result:
    """``runtime ARGS`` run in this process (click's runner) on ``settings`` (plus
    ``extra`` settings); ``.exit_code``, ``.stdout``, ``.stderr``."""
    from runtime.cli.main import cli as command
    env = {k: v for k, v in worker_env(settings, **extra).items() if k.startswith("RUNTIME_")}
    return CliRunner().invoke(command, list(args), env=env, catch_exceptions=False)


def rt(env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ARGS`` as a process, with ``env``."""
    return subprocess.run([sys.executable, "-m", "runtime", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


class TaskDir:
    """A folder of task modules a test writes: importable in the test process (on
    sys.path) and by the CLI and worker processes run in it (their cwd); the modules
    imported from it are forgotten at teardown (``forget``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, name: str, text: str) -> Path:
        """Write the module file ``name`` (``pkg/mod.py``) with ``text`` (dedented)."""
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
        importlib.invalidate_caches()
        return f

    def forget(self) -> None:
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(self.path)):
                del sys.modules[name]


@contextlib.contextmanager
def redis_server_in(folder: str | Path, *options: str, name: str = "redis.sock") -> Iterator[str]:
    """A redis-server of the test's own on the unix socket ``folder/name``, without
    persistence (more ``options``, e.g. ``"--maxmemory", "1"``); yields its URL once it
    answers, and stops it by pid."""
    from runtime.broker.embedded import redis_server_binary
    sock = os.path.join(str(folder), name)
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", sock, "--save", "",
                             "--appendonly", "no", "--dir", str(folder), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"unix://{sock}"
    try:
        wait_until(lambda: os.path.exists(sock) and redis.Redis.from_url(url).ping(), 10, "redis-server")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
