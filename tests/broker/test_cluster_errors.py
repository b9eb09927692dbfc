"""Errors on a Redis Cluster, as on one Redis: a cluster no node of which answers
(BrokerUnavailable, exit code 4), a cluster node behind a ``redis://`` URL and a
database in a ``redis+cluster://`` URL (ConfigError, exit code 2), each in one line.
Real servers: the suite's cluster (tests/cluster.py), a cluster of the test's own where
every master is stopped, a port nothing listens on for a cluster that is gone."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from cluster import cluster_in
from helpers import FAST, cli, redis_server_in

from runtime.broker.connection import ANY_REDIS_ERROR, REDIS_ERRORS, runtime_error, transient
from runtime.client import Client, build
from runtime.errors import BrokerUnavailable, ConfigError
from runtime.settings import Settings, load_settings
from runtime.worker.worker import Worker


def _settings(url: str, prefix: str = "ce") -> Settings:
    return load_settings({"redis_url": url, "key_prefix": prefix, **FAST}, env={})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_cluster() -> Settings:
    """Settings naming a cluster node where nothing listens."""
    return _settings(f"redis+cluster://127.0.0.1:{_free_port()}")


def _one_line(result: object, code: int, start: str) -> None:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == code, stderr  # type: ignore[attr-defined]
    assert stderr.startswith(start) and len(stderr.splitlines()) == 1, stderr


def test_an_unreachable_cluster_is_broker_unavailable_in_one_line(dead_cluster: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url = dead_cluster.redis_url
    with pytest.raises(BrokerUnavailable, match=f"^cannot reach Redis at {re.escape(str(url))}: .*Connection refused"):
        Client(dead_cluster)
    import runtime
    from runtime.client.defaults import forget_default_client
    forget_default_client()
    monkeypatch.setenv("RUNTIME_REDIS_URL", url)
    with pytest.raises(BrokerUnavailable):
        runtime.queue_job("testtasks.add", {"a": 1, "b": 2})
    for args in (["queues"], ["jobs"], ["info"], ["enqueue", "testtasks.add"], ["cancel", "x"],
                 ["worker", "--burst"], ["worker", "--burst", "--processes", "2"]):
        _one_line(cli(dead_cluster, *args), 4, f"error: cannot reach Redis at {url}: ")


@pytest.fixture
def node_url(redis_cluster: str) -> str:
    """``redis://`` naming the first node of the suite's cluster."""
    return "redis://" + redis_cluster.removeprefix("redis+cluster://").split(",")[0]


def test_a_cluster_node_behind_a_plain_url_is_refused_in_one_line_naming_redis_cluster(node_url: str) -> None:
    settings = _settings(node_url)
    hint = f"error: Redis at {node_url} is a node of a Redis Cluster: use redis+cluster://{node_url[8:]} "
    with pytest.raises(ConfigError, match="is a node of a Redis Cluster: use redis[+]cluster://"):
        Client(settings)
    for args in (["info"], ["jobs"], ["queues"], ["enqueue", "testtasks.add"], ["cancel", "x"],
                 ["worker", "--burst"], ["worker", "--burst", "--processes", "2"]):
        _one_line(cli(settings, *args), 2, hint)


@pytest.fixture
def plain_client_elsewhere(redis_cluster: str) -> Iterator[tuple[redis.Redis, Settings]]:
    """A plain client of a master that does not hold queue ``default``'s slot, with
    settings whose prefix's slot is not there either: the client used as given (it
    passes by connect's check, as an application's own client does)."""
    rc = redis.cluster.RedisCluster.from_url(redis_cluster.replace("redis+cluster://", "redis://").split(",")[0])
    settings = _settings(redis_cluster, "pl")
    homes = {rc.get_node_from_key(k).name for k in ("q:{default}", "pl:{pl}:workers")}
    node = next(n for n in rc.get_primaries() if n.name not in homes)
    plain = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    yield plain, settings
    plain.close()
    rc.close()


def test_moved_and_crossslot_replies_to_a_given_plain_client_are_a_config_error(
        plain_client_elsewhere: tuple[redis.Redis, Settings]) -> None:
    plain, settings = plain_client_elsewhere
    client = Client(settings, client=plain)
    for call in (lambda: client.queue_job("testtasks.add", {"a": 1, "b": 2}),
                 lambda: client.cancel("default:01a2488653de52c516bc3099"),
                 lambda: client.reader.queues()):
        with pytest.raises(ConfigError, match="is a node of a Redis Cluster: use redis[+]cluster://127.0.0.1:"):
            call()
    parts = build(settings, plain)
    worker = Worker(settings, parts.broker, parts.store, parts.middleware)
    with pytest.raises(ConfigError, match="is a node of a Redis Cluster"):
        worker.run(burst=True)


def test_redis_cluster_url_of_a_standalone_redis_or_with_a_database_is_refused(tmp_path: Path,
                                                                            redis_cluster: str) -> None:
    port = _free_port()
    with redis_server_in(tmp_path, "--port", str(port)):
        standalone = _settings(f"redis+cluster://127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=f"is not a Redis Cluster .*: use redis://127.0.0.1:{port}$"):
            Client(standalone)
        _one_line(cli(standalone, "queues"), 2, f"error: Redis at redis+cluster://127.0.0.1:{port} is not")
    first = redis_cluster.split(",")[0]
    with_db = _settings(first + "/3")
    _one_line(cli(with_db, "queues"), 2, f"error: bad Redis URL '{first}/3': a Redis Cluster has only database 0")
    assert cli(_settings(first + "/0"), "queues").exit_code == 0


def test_a_connected_client_raises_broker_unavailable_while_the_whole_cluster_is_stopped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every master stopped under a client that was connected: BrokerUnavailable, and no
    error line of redis-py's own for each failed refresh of its slot map (a debug line,
    shown where its logger logs at DEBUG)."""
    with cluster_in(tmp_path) as cluster:
        client = Client(_settings(cluster.url))
        job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
        for port in cluster.masters:
            cluster.kill(port)
        for call in (lambda: client.queue_job("testtasks.add", {"a": 1, "b": 2}),
                     lambda: client.get_job(job_id), lambda: client.cancel(job_id)):
            with pytest.raises(BrokerUnavailable, match="^Redis unavailable: Redis Cluster cannot be connected"):
                call()
    assert not [r for r in caplog.records if r.name.startswith("redis") and r.levelno >= logging.WARNING]
    logger = logging.getLogger("redis.cluster")
    logger.error("Topology refresh failed, keeping the current one: %s", "no node answers")
    assert not [r for r in caplog.records if r.name == "redis.cluster"]
    caplog.set_level(logging.DEBUG, logger="redis.cluster")
    logger.error("Topology refresh failed, keeping the current one: %s", "no node answers")
    assert [(r.levelname, r.getMessage()[:23]) for r in caplog.records if r.name == "redis.cluster"] == [
        ("DEBUG", "Topology refresh failed")]


def test_a_cluster_client_s_refusal_of_a_command_is_no_outage_and_raised_as_it_is(redis_cluster: str) -> None:
    """redis-py's cluster client refuses a script whose keys are in several slots before
    sending it: a bug to see, neither taken for Redis being away (REDIS_ERRORS, retried
    by the worker) nor turned into BrokerUnavailable."""
    client = Client(_settings(redis_cluster, "rf"))
    with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot") as raised:
        client.call(client.redis.eval, "return 1", 2, "rf:{a}", "rf:{b}")
    exc = raised.value
    assert type(exc) is redis.exceptions.RedisClusterException
    assert not isinstance(exc, REDIS_ERRORS) and isinstance(exc, ANY_REDIS_ERROR)
    assert not transient(exc) and runtime_error(exc, client.redis) is None
