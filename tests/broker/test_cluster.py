"""runtime on a Redis Cluster of 3 masters started by the suite (tests/cluster.py): queues
whose hash slots are on every shard, each script call in one slot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.cluster
from cluster import cluster_in, redis_cluster_in
from helpers import FAST, InProcess, Processes, wait_until

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


def test_the_watchdog_s_client_calls_the_master_of_each_slot_and_follows_moved(cluster_settings: Settings) -> None:
    """runtime.resp.Cluster (the watchdog's stdlib client): a script call goes to the
    master of its first key's slot (CRC16 of the hash tag, as redis-py reckons it); with a
    stale slot map, the MOVED replies are followed."""
    from redis.crc import key_slot

    from runtime.resp import Cluster, keyslot
    client = Client(cluster_settings)
    keys = [client.broker.keys.ready(q) for q in spread_queues(client)] + [client.broker.keys.workers]
    assert [keyslot(k) for k in keys] == [key_slot(k.encode()) for k in keys]
    first = client.redis.get_primaries()[0]  # type: ignore[attr-defined]
    c = Cluster({"cluster": [[first.host, first.port]]})
    incr = "return redis.call('INCR', KEYS[1])"
    try:
        assert [c.call("EVAL", incr, "1", k + ":n") for k in keys] == [1] * len(keys)
        c.slots = [(0, 16383, (first.host, first.port))]  # every slot on one master: the others answer MOVED
        assert [c.call("EVAL", incr, "1", k + ":n") for k in keys] == [2] * len(keys)
        assert len(c.nodes) == 3
    finally:
        c.close()


def test_the_watchdog_s_client_follows_an_ask_while_a_slot_migrates(cluster_settings: Settings) -> None:
    """A slot migrating from one master to another: a key not on the old master yet
    answers ASK there, and the call goes to the new one (ASKING first)."""
    from runtime.resp import Cluster, Resp, keyslot
    client = Client(cluster_settings)
    key = client.broker.keys.ready(f"ask{abs(hash(cluster_settings.key_prefix))}")
    slot = keyslot(key)
    rc = client.redis
    source = rc.get_node_from_key(key)  # type: ignore[attr-defined]
    target = next(n for n in rc.get_primaries() if n.name != source.name)  # type: ignore[attr-defined]
    src, dst = (Resp({"host": n.host, "port": n.port}) for n in (source, target))
    ids = {n.name: r.call("CLUSTER", "MYID") for n, r in ((source, src), (target, dst))}
    c = Cluster({"cluster": [[source.host, source.port]]})
    try:
        dst.call("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source.name])
        src.call("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.name])
        assert c.call("EVAL", "return redis.call('INCR', KEYS[1])", "1", key) == 1
        dst.call("ASKING")
        assert dst.call("GET", key) == "1"  # on the new master
        dst.call("ASKING")
        dst.call("DEL", key)
    finally:
        for r in (src, dst):
            r.call("CLUSTER", "SETSLOT", str(slot), "STABLE")
            r.close()
        c.close()


def test_a_blocking_wait_over_several_shards_answers_at_once_and_loses_no_item(cluster_settings: Settings) -> None:
    """A worker or client blocked on keys of several hash slots (a BLPOP takes one slot's
    keys only) is answered at once by an item in any of them, however long its timeout;
    an item popped in another slot meanwhile is pushed back at the head of its list."""
    import threading
    import time

    from runtime.broker.direct import blpop
    client = Client(cluster_settings)
    keys = [client.broker.keys.wake(q) for q in spread_queues(client)]
    result: list[object] = []
    waiting = threading.Thread(target=lambda: result.append(blpop(client.redis, keys, 30.0)))
    t0 = time.monotonic()
    waiting.start()
    masters = client.redis.get_primaries()  # type: ignore[attr-defined]
    wait_until(lambda: sum(1 for n in masters for c in n.redis_connection.client_list()
                           if c.get("cmd") == "blpop") >= len(keys), 10, "a BLPOP on each master")
    client.redis.rpush(keys[-1], "last")
    waiting.join(10)
    assert [tuple(r) for r in result] == [(keys[-1], "last")] and time.monotonic() - t0 < 15  # not the 30 s timeout
    client.redis.rpush(keys[0], "a1", "a2")
    client.redis.rpush(keys[1], "b1")
    got = [blpop(client.redis, keys, 5.0) for _ in range(3)]
    assert sorted(g[1] for g in got) == ["a1", "a2", "b1"]
    assert [g[1] for g in got if g[0] == keys[0]] == ["a1", "a2"]  # in order
    assert blpop(client.redis, keys, 0.2) is None
    assert not [k for k in client.redis.scan_iter(f"{cluster_settings.key_prefix}:*", target_nodes="all")
                if ":cancel:" in str(k)]


def test_a_master_killed_mid_drain_loses_no_job_and_the_workers_go_on(tmp_path: Path) -> None:
    """A master of a cluster with a replica of each is SIGKILLed while two worker processes
    drain queues on every master (it holds the deployment-wide keys and a queue): its
    replica takes over after cluster-node-timeout, every job ends success (one whose
    outcome died with the master may run twice: at-least-once), the workers neither die
    nor hang, and none logs a traceback."""
    with cluster_in(tmp_path / "cluster", replicas=1, node_timeout_ms=1000) as cl:
        settings = load_settings({"redis_url": cl.url, "key_prefix": "fo", **FAST}, env={})
        client = Client(settings)
        queues = spread_queues(client)
        ids = [i for q in queues for i in client.queue_jobs("testtasks.sleep", [{"seconds": 0.01}] * 400, queue=q)]
        wait_until(cl.caught_up, 20, "the replicas to catch up")
        rc = client.redis
        assert isinstance(rc, redis.cluster.RedisCluster)
        victim = rc.get_node_from_key(client.broker.keys.workers).port
        mine = next(q for q in queues if rc.get_node_from_key(client.broker.keys.ready(q)).port == victim)
        workers = Processes(settings, tmp_path)
        procs = [workers.start("--queues", ",".join(queues), "--greenlets", "20", worker_ttl_s=5.0,
                               visibility_timeout_s=5.0) for _ in range(2)]
        try:
            wait_until(lambda: _successes(client) >= 300, 60, "jobs to run")
            cl.kill(victim)
            replica = cl.client(cl.replicas[cl.masters.index(victim)])
            wait_until(lambda: replica.info("replication")["role"] == "master", 30, "the replica to take over")
            assert replica.zcard(client.broker.keys.status(mine, "success")) < 400  # the drain spans the failover
            wait_until(lambda: _successes(client) == len(ids), 60, "every job to succeed after the failover")
            assert [p.poll() for p in procs] == [None, None]
            for p in procs:
                assert "Traceback" not in workers.log(p), workers.log(p)[-3000:]
        finally:
            workers.stop_all()


def _successes(client: Client) -> int:
    """Jobs in success, or -1 while the cluster cannot answer (a failover under way)."""
    try:
        return client.store.counts().get("success", 0)
    except redis.RedisError:
        return -1


def test_a_worker_rides_out_a_cluster_no_node_of_which_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Every node down at once (a restart of the cluster, a partition): redis-py's cluster
    client raises RedisClusterUnreachableError, not a RedisError. The worker takes it for
    Redis being away (said once), keeps its outcomes whole, records them once the nodes are
    back (with their data: append-only files), and its reaper lives on."""
    import logging
    caplog.set_level(logging.INFO, "runtime")
    with cluster_in(tmp_path / "cluster", appendonly=True) as cl:
        settings = load_settings({"redis_url": cl.url, "key_prefix": "un", **FAST}, env={})
        client = Client(settings)
        queues = spread_queues(client)
        ids = [client.queue_job("testtasks.sleep", {"seconds": 1.0}, queue=q) for q in queues * 2]
        run = InProcess(settings)
        w = run.start(greenlets=10, queues=",".join(queues))
        try:
            wait_until(lambda: all(j.status == "started" for j in client.store.get_many(ids)), 10, "jobs running")
            for port in cl.masters:
                cl.kill(port)
            wait_until(lambda: "lost Redis at" in caplog.text and not w.slots.busy, 20, "the jobs to end meanwhile")
            for port in cl.masters:
                cl.restart(port)
            jobs = client.wait(ids, timeout_s=30)
            assert [(j.status, j.result, j.exc_type) for j in jobs] == [("success", 1.0, None)] * len(ids)
            assert run.alive(w)
            wait_until(lambda: "is back after" in caplog.text, 10, "the worker to say Redis is back")
            for said in ("without their data", "dropping", "reaper pass failed", "claim round trip failed"):
                assert said not in caplog.text, said
            assert caplog.text.count("lost Redis at") == 1
            assert "RedisClusterUnreachableError" not in capfd.readouterr().err  # no greenlet died of it
        finally:
            run.stop_all()


def test_runtime_info_on_a_cluster_names_its_masters_and_sums_their_memory(cluster_settings: Settings) -> None:
    from helpers import cli
    client = Client(cluster_settings)
    masters = client.redis.get_primaries()  # type: ignore[attr-defined]
    used = sum(int(n.redis_connection.info("memory")["used_memory"]) for n in masters)
    out = cli(cluster_settings, "info")
    assert out.exit_code == 0 and "(cluster of 3 masters)" in out.stdout, out.stdout
    server = client.reader.server()
    assert server["role"] == "cluster of 3 masters" and 0.5 * used < server["used_memory_bytes"] < 2 * used
