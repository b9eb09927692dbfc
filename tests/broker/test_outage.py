"""Redis hiccups that must not lose a job: a lost script cache, a restart, a broken wait,
a Redis that refuses writes for a while, an outage under a running worker."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
import redis
from helpers import InProcess, wait_until

from runtime.broker.embedded import redis_server_binary
from runtime.client import Client
from runtime.errors import BrokerUnavailable
from runtime.settings import load_settings


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own (with an AOF, so a restart keeps the data)."""
    sock = str(tmp_path / "r.sock")
    argv = [redis_server_binary(), "--port", "0", "--unixsocket", sock, "--dir", str(tmp_path),
            "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    procs = []

    def start():
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        wait_until(lambda: os.path.exists(sock) and _ping(sock), 10, "redis")
        return procs[-1]
    start()
    yield sock, start, procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(10)


def _ping(sock):
    try:
        return redis.Redis(unix_socket_path=sock).ping()
    except redis.RedisError:
        return False


def test_a_client_goes_on_queuing_across_a_lost_script_cache_and_a_redis_restart(own_redis):
    """Enqueue runs its script below redis-py's command layer: a server that forgot the
    script, and a pooled connection that died with the server, still queue the job."""
    sock, start, procs = own_redis
    client = Client(load_settings({"redis_url": f"unix://{sock}", "key_prefix": "r"}, env={}))
    first = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    redis.Redis(unix_socket_path=sock).script_flush()
    second = client.queue_job("testtasks.add", {"a": 2, "b": 2})
    procs[-1].terminate()
    procs[-1].wait(10)
    start()  # a new server process: the client's pooled connection is dead, the cache empty
    third = client.queue_job("testtasks.add", {"a": 3, "b": 3})
    assert [client.get_job(i).status for i in (first, second, third)] == ["queued"] * 3
    assert client.redis.zcard(client.broker.keys.ready("default")) == 3


def test_a_worker_goes_on_claiming_and_recording_across_a_lost_script_cache(client, worker, settings):
    """The worker's claims and completions also run their scripts below redis-py's command
    layer; a server that forgot them (SCRIPT FLUSH) loads them again, nothing is lost."""
    w = worker.start(greenlets=4)
    first = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(20)])
    client.wait(first, timeout_s=10)
    r = redis.Redis.from_url(settings.redis_url)
    slow = client.queue_jobs("testtasks.sleep", [{"seconds": 0.3}] * 4)
    wait_until(lambda: all(j.status == "started" for j in client.store.get_many(slow)), 10, "jobs running")
    r.script_flush()  # their outcomes go in a finish that finds no script
    more = client.queue_jobs("testtasks.add", [{"a": i, "b": 2} for i in range(20)])
    jobs = client.wait(slow + more, timeout_s=20)
    assert [j.status for j in jobs] == ["success"] * 24
    assert [j.result for j in jobs[4:]] == [i + 2 for i in range(20)]
    assert worker.alive(w)


def test_a_heartbeat_that_finds_its_scripts_lost_loads_them_through_its_own_connection(client, settings):
    """The heartbeat thread's client loads the scripts a server forgot (a restart, a replica
    promoted by a failover): a connection the hub's client opened from that thread would
    serve the hub later, and a gevent socket serves only the thread that made it."""
    from runtime.broker.connection import own_client
    registry = client.broker.registry
    conn = own_client(client.redis)
    redis.Redis.from_url(settings.redis_url).script_flush()

    def refused(*_args, **_kwargs):
        raise AssertionError("the hub's client used from the heartbeat")
    registry.redis = type("Refusing", (), {"script_load": refused})()
    aborts, paused = registry.beat(conn, "w1", {"id": "w1"}, ["default"], {"default": ["default:x"]})
    assert (aborts, paused) == ([], frozenset())
    assert conn.hget(client.broker.keys.worker("w1"), "id") == "w1"


def test_a_wait_whose_connection_breaks_asks_again_instead_of_blocking_on(own_redis):
    """A notification can be lost with a broken connection, and Redis can come back
    without the job: after the break, ``wait`` asks again what became of its jobs."""
    import threading
    import time

    from runtime.errors import JobNotFound
    sock, start, procs = own_redis
    client = Client(load_settings({"redis_url": f"unix://{sock}", "key_prefix": "k"}, env={}))
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})  # no worker: it stays queued
    out = {}

    def waiter():
        t0 = time.monotonic()
        try:
            client.wait(job_id, timeout_s=30)
        except Exception as exc:  # noqa: BLE001
            out["exc"] = exc
        out["s"] = time.monotonic() - t0
    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    r = redis.Redis(unix_socket_path=sock)
    wait_until(lambda: any(c.get("cmd") == "blpop" for c in r.client_list()), 10, "the wait to block")
    r.delete(client.broker.keys.job(job_id))  # as if Redis came back without it
    r.client_kill_filter(_type="normal", skipme=True)
    th.join(10)
    assert isinstance(out.get("exc"), JobNotFound) and out["s"] < 10, out


@pytest.fixture
def own_worker():
    """In-process workers on an own_redis (make them with ``own_worker(settings)``)."""
    made = []

    def make(settings):
        made.append(InProcess(settings))
        return made[-1]
    yield make
    for w in made:
        w.stop_all()


def _own(sock, prefix, **more):
    from helpers import FAST
    return load_settings({"redis_url": f"unix://{sock}", "key_prefix": prefix, **FAST, **more}, env={})


def test_a_wait_rides_out_a_short_redis_restart(own_redis, own_worker):
    import threading
    sock, start, procs = own_redis
    settings = _own(sock, "rs")
    client = Client(settings)
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, delay=0.3)
    out = {}
    th = threading.Thread(target=lambda: out.update(job=client.wait(job_id, timeout_s=30)), daemon=True)
    th.start()
    r = redis.Redis(unix_socket_path=sock)
    wait_until(lambda: any(c.get("cmd") == "blpop" for c in r.client_list()), 10, "the wait to block")
    procs[-1].terminate()
    procs[-1].wait(10)
    start()  # back with its data (AOF), the wait's connection gone
    own_worker(settings).start()
    th.join(20)
    assert out.get("job") is not None and out["job"].result == 3


def test_a_redis_that_refuses_writes_for_a_while_loses_no_outcome(own_redis, own_worker, caplog):
    """A failover makes Redis a read-only replica for a while (READONLY replies): the
    worker waits and records every outcome whole once it takes writes again."""
    import socket
    caplog.set_level(logging.INFO, "runtime")
    sock, start, procs = own_redis
    settings = _own(sock, "ro")
    client = Client(settings)
    w = own_worker(settings).start(greenlets=10)
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 10)
    wait_until(lambda: all(j.status == "started" for j in client.store.get_many(ids)), 10, "jobs running")
    r = redis.Redis(unix_socket_path=sock)
    with socket.socket() as s:  # a master that is not there: Redis only refuses writes
        s.bind(("127.0.0.1", 0))
        r.replicaof("127.0.0.1", s.getsockname()[1])
    wait_until(lambda: "lost Redis at" in caplog.text and not w.slots.busy, 10, "the jobs to end meanwhile")
    r.replicaof("no", "one")
    jobs = client.wait(ids, timeout_s=20)
    assert [(j.status, j.result, j.exc_type) for j in jobs] == [("success", 0.5, None)] * 10
    assert "without their data" not in caplog.text


def test_worker_survives_a_redis_outage_and_loses_nothing(own_redis, own_worker, caplog):
    caplog.set_level(logging.INFO, "runtime")
    sock, start, procs = own_redis
    settings = _own(sock, "o")
    client = Client(settings)
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 4)
    run = own_worker(settings)
    w = run.start(greenlets=2)
    wait_until(lambda: sum(j.status == "success" for j in client.store.get_many(ids)) >= 1, 10, "first jobs")
    procs[-1].terminate()
    procs[-1].wait(10)
    with pytest.raises(BrokerUnavailable):
        Client(settings).queue_job("testtasks.add", {"a": 1, "b": 1})
    wait_until(lambda: "lost Redis at" in caplog.text, 10, "the worker to notice the outage")
    gone = caplog.text.count("lost Redis at")
    start()
    client = Client(settings)
    jobs = client.wait(ids, timeout_s=30)
    assert all(j.status == "success" for j in jobs)
    assert run.alive(w)
    # said once each way, naming the server (not an error a second from each part)
    wait_until(lambda: "is back after" in caplog.text, 10, "the worker to say Redis is back")
    assert gone == 1 and caplog.text.count("lost Redis at") == 1 and caplog.text.count("is back after") == 1
    assert f"lost Redis at unix://{sock} while " in caplog.text


def test_a_worker_drains_a_redis_that_filled_up(own_redis, own_worker, caplog):
    """A full Redis (maxmemory, noeviction) refuses producers, but the jobs it holds are
    claimed, run and recorded: workers must drain the queue that filled it."""
    caplog.set_level(logging.INFO, "runtime")
    sock, start, procs = own_redis
    settings = _own(sock, "full")
    client = Client(settings)
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(20)])
    r = redis.Redis(unix_socket_path=sock)
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(BrokerUnavailable, match="Redis is full"):
            client.queue_job("testtasks.add", {"a": 1, "b": 1})
        w = own_worker(settings).start(greenlets=4)
        jobs = client.wait(ids, timeout_s=20)
        assert [j.result for j in jobs] == [i + 1 for i in range(20)]
        assert "is full (used memory over maxmemory" in caplog.text and "lost Redis" not in caplog.text
        assert w.link.up
    finally:
        r.config_set("maxmemory", 0)


def test_enqueue_wait_that_loses_redis_still_prints_the_id(own_redis):
    """Every path that queued a job prints its id: also a wait cut short by Redis going away."""
    import threading

    from helpers import cli
    sock, start, procs = own_redis
    settings = _own(sock, "lw")
    out = {}
    th = threading.Thread(target=lambda: out.update(r=cli(
        settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--wait", "20")), daemon=True)
    th.start()
    r = redis.Redis(unix_socket_path=sock)
    wait_until(lambda: any(c.get("cmd") == "blpop" for c in r.client_list()), 10, "the wait to block")
    job_id = next(r.zrange(k, 0, 0)[0].decode() for k in r.keys("lw:st:*:queued"))
    procs[-1].terminate()
    procs[-1].wait(10)
    th.join(30)
    res = out["r"]
    assert res.exit_code == 4 and res.stdout.strip() == job_id
    assert f"job {job_id} was queued; the wait for it stopped:" in res.stderr
