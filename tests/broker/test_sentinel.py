"""Redis behind Sentinel: a worker and a client on redis+sentinel:// follow a forced
failover without losing a job or an outcome. The set-up (1 master, 1 replica, 3
Sentinels on loopback ports) is started here from the installed redis-server."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import rt, wait_until, with_settings

from runtime.broker.embedded import redis_server_binary
from runtime.client import Client
from runtime.settings import load_settings


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[str]:
    """A redis+sentinel:// URL of a fresh set-up; every process stopped by pid after."""
    procs: list[subprocess.Popen[bytes]] = []
    master, replica = _port(), _port()

    def server(*args: str) -> None:
        procs.append(subprocess.Popen([redis_server_binary(), *args], cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    try:
        base = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        server("--port", str(master), *base)
        server("--port", str(replica), *base, "--replicaof", "127.0.0.1", str(master))
        ports = []
        for i in range(3):
            ports.append(port := _port())
            conf = tmp_path / f"sentinel-{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 2\n"
                            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n")
            server(str(conf), "--sentinel")
        wait_until(lambda: redis.Redis(port=replica).info("replication").get("master_link_status") == "up",
                   20, "the replica to sync")
        wait_until(lambda: all(redis.Redis(port=p).sentinel_master("mymaster").get("num-other-sentinels") == 2
                               for p in ports), 20, "the Sentinels to see each other")
        # a Sentinel that has not yet found the replica (its INFO of the master, every 10 s)
        # refuses a failover: NOGOODSLAVE
        wait_until(lambda: all(redis.Redis(port=p).sentinel_master("mymaster").get("num-slaves") == 1
                               for p in ports), 30, "the Sentinels to know the replica")
        yield "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/mymaster"
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def test_a_worker_follows_a_sentinel_failover_losing_nothing(sentinels, workers):
    settings = load_settings({"redis_url": sentinels, "key_prefix": "sent", "heartbeat_interval_s": 0.2,
                              "worker_ttl_s": 1.0, "reap_interval_s": 0.2, "task_modules": "tasks_example,testtasks"},
                             env={})
    client = Client(settings)
    before = client.redis.connection_pool.get_master_address()
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.02}] * 400)
    workers.settings = settings
    proc = workers.start("--greenlets", "10")
    wait_until(lambda: client.store.get_many(ids[:50])[-1].status.value == "success", 30, "the drain to start")
    s = sentinels.split("//")[1].split(",")[0].split(":")
    redis.Redis(host=s[0], port=int(s[1])).execute_command("SENTINEL", "FAILOVER", "mymaster")
    wait_until(lambda: client.redis.connection_pool.get_master_address() != before, 20, "the failover")
    jobs = client.wait(ids, timeout_s=90)
    assert Counter(j.status.value for j in jobs) == {"success": 400}, workers.log(proc)
    assert proc.poll() is None  # it went on, on the new master


def test_wait_replicas_waits_for_the_replica_and_says_when_it_does_not_answer(sentinels, settings, caplog):
    replicated = Client(load_settings({"redis_url": sentinels, "key_prefix": "wr", "wait_replicas": 1}, env={}))
    with caplog.at_level(logging.WARNING, logger="runtime.broker"):
        began = time.monotonic()
        replicated.queue_job("testtasks.add", {"a": 1, "b": 2})
        assert time.monotonic() - began < 0.5 and "replicas" not in caplog.text  # the replica answered
        alone = Client(with_settings(settings, wait_replicas=1))  # the tests' Redis has no replica
        job = alone.queue_job("testtasks.add", {"a": 1, "b": 2})
    assert alone.get_job(job).status.value == "queued"  # written all the same
    assert "reached 0 of 1 replicas" in caplog.text


@pytest.mark.parametrize(("url", "code", "says"), [
    ("redis+sentinel://127.0.0.1:26379", 2, "expected redis+sentinel://"),
    ("redis+sentinel://127.0.0.1:99999/mymaster", 2, "port 1 to 65535"),
    ("redis+sentinel:///mymaster", 2, "expected redis+sentinel://"),
    (f"redis+sentinel://127.0.0.1:{_port()}/mymaster", 4, "no Sentinel there names a master"),
])
def test_a_bad_or_unreachable_sentinel_url_is_one_line(cli_env, url, code, says):
    r = rt({**cli_env, "RUNTIME_REDIS_URL": url}, "jobs")
    assert r.returncode == code and len(r.stderr.splitlines()) == 1 and says in r.stderr, r.stderr
