"""Exit codes and messages of every command with a MongoDB URL (issue 19, finding 6):
refused credentials exit 2, an unreachable MongoDB exits 4 (commands that change jobs
excepted: Redis takes the change), one short line naming the host and the reason, no
traceback; workers stop claiming as soon as MongoDB goes away; reads fail fast."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
from helpers import cli, rt, wait_until, worker_env
from mongo_fixtures import mongo_env

from runtime.client import Client

#: Commands that read MongoDB (``job`` and ``cancel`` get an id of a job that exists).
READS = [["jobs"], ["job", "{id}"], ["queues"], ["requeue", "--path", "testtasks.add"], ["mongo", "reconcile"],
         ["mongo", "ensure-indexes"], ["mongo", "attach"]]
#: Commands that change jobs: Redis takes the change even when MongoDB is unreachable.
CHANGES = [["enqueue", "testtasks.add", "{\"a\": 1, \"b\": 1}"], ["cancel", "{id}"]]


def _one_line(out: str) -> bool:
    return len(out.splitlines()) == 1 and out.startswith("error: ") and len(out) < 200 and "Traceback" not in out


def _urls(mongo_settings):
    host = urlparse(mongo_settings.mongodb_url).netloc
    return {"refused": f"mongodb://u:wrong@{host}/db?directConnection=true&authSource=admin",
            "unreachable": "mongodb://127.0.0.1:1/?directConnection=true"}


def test_refused_credentials_exit_2_for_every_command(mongo_settings, client):
    """Before: ``enqueue`` exited 0 (the job went to Redis only) and ``worker`` printed its
    line, then ~80 lines of traceback from the sweep."""
    url = _urls(mongo_settings)["refused"]
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=600)
    for args in READS + CHANGES:
        argv = [a.replace("{id}", job_id) for a in args]
        r = cli(mongo_settings, "--mongodb", url, *argv, mongodb_timeout_s=0.5)
        assert r.exit_code == 2 and _one_line(r.stderr), (argv, r.exit_code, r.stderr)
        assert "refused the credentials" in r.stderr and "wrong" not in r.stderr, (argv, r.stderr)
    assert client.redis.zcard(client.broker.keys.status("default", "queued")) == 1  # enqueue queued nothing
    assert client.live.get(job_id).status == "queued"  # cancel changed nothing
    env = worker_env(mongo_settings, mongodb_url=url, mongodb_timeout_s=0.5)
    for burst in (["--burst"], []):
        out = rt(env, "worker", *burst, "--tasks", "testtasks", timeout=60)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
        assert out.returncode == 2 and len(errors) == 1 and "refused the credentials" in errors[0], out.stderr
        assert "Traceback" not in out.stderr, out.stderr


def test_an_unreachable_mongodb_exits_4_for_every_command_that_needs_it(mongo_settings, client):
    """Before: ``worker --burst`` exited 0 after 11 s. Commands that change jobs queue or
    cancel in Redis all the same (exit 0, one warning line: the copy is handed over)."""
    url = _urls(mongo_settings)["unreachable"]
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=600)
    for args in READS:
        argv = [a.replace("{id}", job_id) for a in args]
        r = cli(mongo_settings, "--mongodb", url, *argv, mongodb_timeout_s=0.3)
        assert r.exit_code == 4 and _one_line(r.stderr), (argv, r.exit_code, r.stderr)
        assert r.stderr == "error: MongoDB unavailable: 127.0.0.1:1: [Errno 111] Connection refused\n", r.stderr
    env = worker_env(mongo_settings, mongodb_url=url, mongodb_timeout_s=0.3)
    for args in CHANGES:
        out = rt(env, *[a.replace("{id}", job_id) for a in args])
        assert out.returncode == 0 and len(out.stderr.splitlines()) == 1, out.stderr
        assert "not copied to MongoDB" in out.stderr and "handed over" in out.stderr, out.stderr
    assert client.live.get(job_id).status == "cancel"
    t = time.monotonic()
    out = rt(env, "worker", "--burst", "--tasks", "testtasks", timeout=60)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 4 and errors == ["error: MongoDB unavailable: 127.0.0.1:1: [Errno 111] Connection refused"]
    assert "Traceback" not in out.stderr and time.monotonic() - t < 10


def test_an_unavailable_line_names_the_hosts_whatever_the_cause(mongo_settings):
    """Before: `error: MongoDB unavailable: No servers found yet` (or `No replica set
    members found yet`), naming no host. Servers that accept connections and never
    answer leave pymongo's selection without a reason of its own."""
    import socket
    holes = [socket.socket() for _ in range(2)]
    try:
        for hole in holes:
            hole.bind(("127.0.0.1", 0))
            hole.listen(16)
        a, b = (f"127.0.0.1:{h.getsockname()[1]}" for h in holes)
        for url, hosts in ((f"mongodb://u:secret@{a}/?directConnection=true", a),
                           (f"mongodb://u:secret@{a},{b}/?replicaSet=rs0", ",".join(sorted((a, b))))):
            r = cli(mongo_settings, "--mongodb", url, "jobs", mongodb_timeout_s=5, mongodb_select_timeout_s=0.3)
            assert r.exit_code == 4 and _one_line(r.stderr), r.stderr
            assert r.stderr.startswith(f"error: MongoDB unavailable: {hosts}: No "), r.stderr
            assert "secret" not in r.stderr
    finally:
        for hole in holes:
            hole.close()


def test_info_shows_the_redis_side_and_an_unreachable_mongodb(mongo_settings, client):
    """Before: `runtime info` exited 4 with the error line alone."""
    import json
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=600)
    url = _urls(mongo_settings)["unreachable"]
    r = cli(mongo_settings, "--mongodb", url, "info", mongodb_timeout_s=0.3)
    assert r.exit_code == 0, r.stderr
    assert (f"mongodb   {url} (runtime.jobs): unreachable (MongoDB unavailable: "
            f"127.0.0.1:1: [Errno 111] Connection refused)") in r.stdout, r.stdout
    assert "queues    default 0 ready, 1 delayed" in r.stdout and "jobs      unknown (MongoDB not read)" in r.stdout
    data = json.loads(cli(mongo_settings, "--mongodb", url, "info", "--json", mongodb_timeout_s=0.3).stdout)
    assert data["mongodb"]["unreachable"].startswith("MongoDB unavailable: 127.0.0.1:1: ") and data["counts"] is None
    data = json.loads(cli(mongo_settings, "info", "--json", **mongo_env(mongo_settings)).stdout)
    assert data["mongodb"]["unreachable"] is None and set(data["counts"]) >= {"queued", "success"}


@pytest.mark.timing
def test_interactive_reads_fail_within_the_select_timeout(mongo_settings):
    """Before: ``runtime jobs`` took 5.9 s to fail during an outage (the 5 s timeout)."""
    env = worker_env(mongo_settings, mongodb_url=_urls(mongo_settings)["unreachable"])
    t = time.monotonic()
    out = rt(env, "jobs")
    elapsed = time.monotonic() - t
    assert out.returncode == 4 and elapsed < mongo_settings.mongodb_select_timeout_s + 1.5, elapsed


@pytest.mark.timing
def test_a_worker_stops_claiming_within_the_select_timeout_of_an_outage(mongo_settings, worker):
    """Before: the worker kept claiming for ~6 s after MongoDB went away. pymongo's monitor
    (a check a second) shows the outage; the worker leaves the idle lists and claims
    nothing more, well within ``mongodb_select_timeout_s`` (2 s)."""
    from tcp_proxy import TcpProxy
    target = urlparse(mongo_settings.mongodb_url)
    proxy = TcpProxy((target.hostname, target.port))
    s = mongo_settings.replace(mongodb_url=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                               mongodb_timeout_s=5.0)
    client = Client(s)
    w = worker.start(**{**mongo_env(s), "mongodb_timeout_s": 5.0})
    assert client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=15).status == "success"
    t = time.monotonic()
    proxy.down()
    wait_until(lambda: w.state.value == "degraded", 10, "the worker to see the outage")
    seen = time.monotonic() - t
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    beat = float(client.redis.hget(client.broker.keys.worker(w.id), "heartbeat_at"))
    wait_until(lambda: float(client.redis.hget(client.broker.keys.worker(w.id), "heartbeat_at") or 0) > beat + 1.0,
               10, "a second of the degraded worker's life")  # an idle worker that missed it would get the job
    assert client.live.get(job_id).status == "queued"
    assert seen < s.mongodb_select_timeout_s, f"{seen:.2f} s"
    proxy.up()
    assert client.wait(job_id, timeout_s=15).status == "success"
