"""The embedded default: one shared redis-server under .runtime/, started on first use."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import HERE, ROOT, wait_until

from runtime.broker.embedded import EmbeddedRedis


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    return env


def _runtime(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    EmbeddedRedis(tmp_path / ".runtime").stop()  # no orphan server left behind


def _servers(home: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "redis-server"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(home) in line]


def test_concurrent_first_use_starts_one_server_and_data_survives_restart(home):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: _runtime(home, "enqueue", "tasks_example.work.noop"), range(6)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    ids = [r.stdout.strip() for r in results]
    assert len(_servers(home)) == 1
    listed = _runtime(home, "jobs", "--json")
    assert sorted(j["id"] for j in json.loads(listed.stdout)["jobs"]) == sorted(ids)
    assert EmbeddedRedis(home / ".runtime").stop()
    assert not _servers(home)
    again = _runtime(home, "job", ids[0])  # starts the server again, from its data
    assert again.returncode == 0 and "queued" in again.stdout


def test_worker_and_enqueuer_share_the_embedded_server(home):
    job_id = _runtime(home, "enqueue", "tasks_example.work.io_wait", '{"seconds": 0.01}').stdout.strip()
    worker = _runtime(home, "worker", "--burst", timeout=60)
    assert worker.returncode == 0, worker.stderr
    shown = _runtime(home, "job", job_id)
    assert "status    success" in shown.stdout


def test_stop_ignores_a_stale_pid_file_instead_of_killing_another_process(home):
    other = subprocess.Popen(["sleep", "30"])
    try:
        (home / ".runtime").mkdir()
        (home / ".runtime" / "redis.pid").write_text(str(other.pid))
        assert EmbeddedRedis(home / ".runtime").stop() is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_project_has_one_server_found_from_its_subfolders_and_says_which(home, tmp_path_factory):
    """As git finds .git: commands in a subfolder use the project's server; a command that
    starts one says so on stderr; `runtime info` and the worker's start line name it."""
    first = _runtime(home, "enqueue", "tasks_example.work.noop")
    assert first.returncode == 0 and "started a new embedded Redis in " + str(home / ".runtime") in first.stderr
    job_id = first.stdout.strip()
    sub = home / "app" / "deep"
    sub.mkdir(parents=True)
    listed = _runtime(sub, "jobs", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [job_id] and "started" not in listed.stderr
    info = _runtime(sub, "info")
    assert f"(embedded: {home / '.runtime'}, pid " in info.stdout and "workers   0 alive" in info.stdout
    assert "queues    default 1 ready, 0 delayed" in info.stdout
    worker = _runtime(sub, "worker", "--burst")
    assert f"started: redis unix://{home / '.runtime' / 'redis.sock'} (embedded: {home / '.runtime'})," in worker.stderr
    assert "ran 1 job" in worker.stderr
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    try:  # outside the project: a new server, and it says where and why
        other = _runtime(elsewhere, "jobs")
        assert other.stderr.startswith(f"runtime: no .runtime/ in {elsewhere} or its parents: "
                                       f"started a new embedded Redis in {elsewhere / '.runtime'}")
    finally:
        EmbeddedRedis(elsewhere / ".runtime").stop()


@contextlib.contextmanager
def _registered_worker(home):
    """A `runtime worker` process of ``home``'s embedded server, once it registered; SIGKILLed
    on the way out."""
    assert _runtime(home, "enqueue", "tasks_example.work.noop").returncode == 0
    worker = subprocess.Popen([sys.executable, "-m", "runtime", "worker"], cwd=home, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: json.loads(_runtime(home, "workers", "--json").stdout), 20, "the worker to register")
        yield worker
    finally:
        worker.kill()
        worker.wait(10)


def test_embedded_stop_refuses_while_workers_use_the_server(home):
    with _registered_worker(home):
        refused = _runtime(home, "embedded", "stop")
        assert refused.returncode == 7 and refused.stderr.startswith("error: 1 worker uses the embedded Redis in ")
        assert "--force" in refused.stderr and _servers(home)
        forced = _runtime(home, "embedded", "stop", "--force")
        assert forced.returncode == 0 and forced.stdout == "stopped\n" and not _servers(home)


def test_embedded_stop_does_not_wait_for_the_entry_of_a_killed_worker_to_expire(home):
    with _registered_worker(home):
        pass  # killed on the way out
    stopped = _runtime(home, "embedded", "stop")  # its registry entry is still there for worker_ttl_s
    assert stopped.returncode == 0 and stopped.stdout == "stopped\n", stopped.stderr
