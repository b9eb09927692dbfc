"""runtime on a Redis Cluster of 3 masters started by the suite (tests/cluster.py): queues
whose hash slots are on every shard, each script call in one slot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.cluster
from cluster import redis_cluster_in
from helpers import FAST, InProcess

from runtime.client import Client
from runtime.settings import Settings, load_settings


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster_in(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture
def cluster_settings(cluster_url: str, request: pytest.FixtureRequest) -> Settings:
    return load_settings({"redis_url": cluster_url, "key_prefix": f"c{abs(hash(request.node.name)) % 10**6}",
                          **FAST}, env={})


def spread_queues(client: Client, n: int = 3) -> list[str]:
    """``n`` queue names whose keys live on ``n`` different masters."""
    rc = client.redis
    assert isinstance(rc, redis.cluster.RedisCluster)
    by_node: dict[str, str] = {}
    for i in range(200):
        name = f"q{i}"
        by_node.setdefault(rc.get_node_from_key(client.broker.keys.ready(name)).name, name)
        if len(by_node) == n:
            return sorted(by_node.values())
    raise AssertionError("no queues on every master")


def test_jobs_of_queues_on_every_shard_run_once_and_are_waited_for(cluster_settings: Settings) -> None:
    client = Client(cluster_settings)
    queues = spread_queues(client)
    ids = [client.queue_job("testtasks.add", {"a": i, "b": 1}, queue=q) for i, q in enumerate(queues * 3)]
    InProcess(cluster_settings).burst(queues=",".join(queues))
    jobs = client.wait(ids, timeout_s=20)
    assert [(j.status.value, j.result, j.attempt) for j in jobs] == [("success", i + 1, 1) for i in range(len(ids))]
    assert client.store.counts()["success"] == len(ids)
