"""The MongoDB job store beyond the contract: indexes, TTL, size cap, fencing, the crash
windows between the Redis and the MongoDB write (simulated by writing one side only, then
running the recovery), and a MongoDB outage under a running worker."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime, timedelta
from urllib.parse import urlparse

import pytest
import redis
from helpers import cli, wait_until, worker_env
from mongo_fixtures import in_mongodb, mongo_env

from runtime.client import Client
from runtime.errors import ConfigError, StoreUnavailable
from runtime.settings import load_settings
from runtime.store.mongo.documents import INDEXES, cap_document, document, job_from_document, to_date
from runtime.store.mongo.store import MongoJobStore


@pytest.fixture
def mclient(mongo_settings):
    return Client(mongo_settings)


def _redis_only(mclient):
    """A client on the same Redis and prefix, without MongoDB: a writer that 'crashed'
    before its MongoDB write."""
    return Client(mclient.settings.replace(mongodb_url=None))


def test_indexes_are_declared_once_and_created(mclient, mongo_settings):
    raw = mclient.mongo.store.jobs  # indexes of earlier layouts: one dropped, one redefined
    raw.create_index([("prefix", 1), ("changed_at", -1), ("_id", -1)], name="prefix_changed")
    raw.create_index([("changed_at", -1)], name="changed")
    names = mclient.mongo.store.ensure_indexes()
    assert "prefix_changed" not in raw.index_information()
    assert raw.index_information()["changed"]["key"] == [("changed_at", -1), ("_id", -1)]
    assert set(names) == set(INDEXES)
    info = mclient.mongo.store.jobs.index_information()
    assert set(INDEXES) <= set(info)
    assert info["expire_at_ttl"]["expireAfterSeconds"] == 0
    out = cli(mongo_settings, "mongo", "ensure-indexes", **mongo_env(mongo_settings))
    assert out.exit_code == 0 and "status_queue_changed" in out.stdout


def test_final_documents_get_an_expiry_per_status(mclient, worker, mongo_settings):
    ok = mclient.queue_job("testtasks.add", {"a": 1, "b": 1})
    bad = mclient.queue_job("tasks_example.work.fail", {})
    worker.start(**mongo_env(mongo_settings))
    raw = mclient.mongo.store.jobs
    wait_until(lambda: raw.count_documents({"_id": {"$in": [ok, bad]}, "expire_at": {"$exists": True}}) == 2,
               15, "final documents")
    for job_id, status in ((ok, "success"), (bad, "failed")):
        doc = raw.find_one({"_id": job_id})
        assert doc["status"] == status
        assert isinstance(doc["ended_at"], datetime) and isinstance(doc["expire_at"], datetime)
        assert doc["expire_at"] - doc["ended_at"] == pytest.approx(timedelta(seconds=mongo_settings.mongodb_ttl_s[status]),
                                                                   abs=timedelta(milliseconds=2))
    waiting = mclient.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=60)
    assert "expire_at" not in raw.find_one({"_id": waiting})


def test_a_document_over_the_size_cap_is_cut_with_a_marker(mongo_settings, worker, mclient):
    s = mongo_settings.replace(mongodb_max_doc_bytes=65_536)
    client = Client(s)
    worker.start(**mongo_env(s), mongodb_max_doc_bytes=65_536)
    job_id = client.queue_job("mongotasks.big_result", {"kib": 200})
    assert len(client.wait(job_id, timeout_s=15).result) == 200 * 1024  # Redis holds it whole
    doc = wait_until(lambda: (d := client.store.jobs.find_one({"_id": job_id})) and d["status"] == "success" and d,
                     15, "the success in MongoDB")
    assert doc["truncated"] == ["result"] and "over mongodb_max_doc_bytes=65536" in doc["result"]["truncated"]
    assert client.store.get(job_id).result == doc["result"]
    # a long history keeps its ends
    big = cap_document({"_id": "x", "history": [{"at": i} for i in range(1000)], "logs": ["z" * 100] * 800}, 65_536)
    assert len(big["history"]) == 221 and "history" in big["truncated"] and big["logs"]["truncated"]
    assert big["history"][20]["note"] == "780 history entries not kept"
    cut = job_from_document({"_id": "x", "status": "failed", "path": "p", "traceback": {"truncated": "9 bytes"},
                             "artifacts": {"truncated": "9 bytes"}, "logs": {"truncated": "9 bytes"}})
    assert cut.traceback == "[traceback 9 bytes]" and cut.artifacts == {} and cut.logs == [{"truncated": "9 bytes"}]


def test_a_stale_write_never_overwrites_a_newer_or_final_status(mclient, worker, mongo_settings):
    sync = mclient.mongo
    job_id = mclient.queue_job("testtasks.sleep", {"seconds": 0.3})
    worker.start(**mongo_env(mongo_settings))
    started = wait_until(lambda: (snap := sync.snapshot([job_id])) and snap[0][0].status == "started" and snap[0],
                         10, "the job to start")
    wait_until(lambda: mclient.store.get(job_id).status == "success", 10, "success in MongoDB")
    job, version = started
    assert sync.store.write([document(job, version, mongo_settings)]) == (0, 1)  # late: refused
    assert sync.store.write([document(job, version + 100, mongo_settings)])[0] == 1  # a newer one wins
    assert mclient.store.get(job_id).status == "started"


def test_crash_after_the_redis_enqueue_the_sweep_copies_the_job(mclient):
    crashed = _redis_only(mclient)
    ids = crashed.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    assert in_mongodb(mclient.store, ids) == [None] * 3  # queued in Redis only
    assert [j.status for j in mclient.store.get_many(ids)] == ["queued"] * 3  # reads take them from Redis
    report = mclient.mongo.reconcile(lag_s=0)
    assert report.written == 3
    assert [j.status for j in in_mongodb(mclient.store, ids)] == ["queued"] * 3
    assert mclient.mongo.reconcile(lag_s=0).written == 0  # nothing left to repair


def test_crash_before_the_mongodb_copy_of_an_end_the_sweep_repairs_it(mclient, worker, mongo_settings):
    job_id = mclient.queue_job("testtasks.add", {"a": 20, "b": 22})  # in both stores
    # a worker that wrote Redis only (its MongoDB copies never happened)
    worker.start(task_modules="tasks_example,testtasks")
    assert mclient.wait(job_id, timeout_s=15).result == 42
    assert mclient.store.get(job_id).status == "queued"
    assert mclient.mongo.reconcile(lag_s=0).written == 1
    job = mclient.store.get(job_id)
    assert job.status == "success" and job.result == 42 and len(job.history) == 4


def test_a_worker_sweep_repairs_without_being_asked(mclient, worker, mongo_settings):
    crashed = _redis_only(mclient)
    job_id = crashed.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=120)
    worker.start(**mongo_env(mongo_settings))
    wait_until(lambda: in_mongodb(mclient.store, [job_id])[0] is not None, 15, "the reaper's sweep to copy the job")


@pytest.mark.parametrize("state", ["queued", "started"])
def test_redis_lost_the_job_it_is_queued_again_from_mongodb(mclient, worker, mongo_settings, state):
    job_id = mclient.queue_job("testtasks.add", {"a": 2, "b": 2})
    if state == "started":  # as if a worker had claimed it, then Redis lost everything
        mclient.store.jobs.update_one({"_id": job_id}, {"$set": {"status": "started", "attempt": 1, "version": 2},
                                                        "$push": {"history": {"at": 1.0, "status": "started"}}})
    keys = mclient.broker.keys
    mclient.redis.delete(keys.job(job_id))
    mclient.redis.zrem(keys.ready("default"), job_id)
    mclient.redis.zrem(keys.status("default", "queued"), job_id)
    report = mclient.mongo.reconcile(lag_s=0)
    assert report.adopted == 1
    worker.start(**mongo_env(mongo_settings))
    job = wait_until(lambda: (j := mclient.store.get(job_id)).status == "success" and j, 15, "the job to run")
    assert job.result == 4
    assert any("Redis had lost the job" in (h.get("note") or "") for h in job.history)
    assert mclient.mongo.reconcile(lag_s=0).adopted == 0


def test_jobs_queued_again_from_mongodb_keep_their_due_time(mclient, mongo_settings, worker):
    """Before: after Redis lost its data, `mongo reconcile` queued a job delayed by an hour
    (and a retry due later) as ready now, and a worker ran them early."""
    delayed = mclient.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=3600)
    retrying, ready = mclient.queue_jobs("testtasks.add", [{"a": 2, "b": 2}, {"a": 3, "b": 3}], delay=600)
    due = {i: mclient.live.get(i).due_at for i in (delayed, retrying)}
    due[retrying] = round(due[retrying] + 60, 3)  # as if its first attempt had failed and a retry was due then
    mclient.store.jobs.update_one({"_id": retrying}, {
        "$set": {"status": "retry", "attempt": 1, "retries": 1, "version": 3, "due_at": to_date(due[retrying])},
        "$push": {"history": {"$each": [{"at": to_date(due[retrying] - 61), "status": "started"},
                                        {"at": to_date(due[retrying] - 60), "status": "retry"}]}}})
    mclient.store.jobs.update_one({"_id": ready}, {"$set": {"due_at": to_date(mclient.live.get(ready).queued_at)}})
    mclient.redis.delete(*mclient.redis.scan_iter(match=f"{mongo_settings.key_prefix}:*"))  # Redis lost its data
    out = cli(mongo_settings, "mongo", "reconcile", **mongo_env(mongo_settings))
    assert out.exit_code == 0 and "queued again 3 from MongoDB" in out.stdout, out.stdout + out.stderr
    assert mclient.broker.registry.queue_depths(["default"]) == {"default": {"ready": 1, "delayed": 2}}
    for job_id, when in due.items():
        assert mclient.live.get(job_id).due_at == pytest.approx(when, abs=0.002)
    w = worker.start(**mongo_env(mongo_settings))
    assert mclient.wait(ready, timeout_s=15).result == 6
    assert [j.status for j in mclient.live.get_many([delayed, retrying])] == ["queued", "queued"]  # not run early
    assert worker.stop(w) == 0


def test_cli_reconcile_and_a_mongodb_down_is_exit_4(mclient, mongo_settings):
    crashed = _redis_only(mclient)
    crashed.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 2)
    out = cli(mongo_settings, "mongo", "reconcile", "--json", **mongo_env(mongo_settings))
    assert out.exit_code == 0 and '"written": 2' in out.stdout
    r = cli(mongo_settings, "jobs", **{**mongo_env(mongo_settings), "mongodb_timeout_s": 0.3,
                                       "mongodb_url": "mongodb://127.0.0.1:1/?directConnection=true"})
    assert r.exit_code == 4 and r.stderr.startswith("error: MongoDB unavailable") and len(r.stderr.splitlines()) == 1
    with pytest.raises(StoreUnavailable):
        Client(load_settings({"redis_url": mongo_settings.redis_url, "key_prefix": mongo_settings.key_prefix,
                              "mongodb_url": "mongodb://127.0.0.1:1/", "mongodb_timeout_s": 0.3}, env={})).get_job("x")


def test_settings_and_clear_errors(mongo_settings):
    assert load_settings(env={"RUNTIME_MONGODB_URL": "mongodb://h:27017/db"}).mongodb_url == "mongodb://h:27017/db"
    with pytest.raises(ConfigError, match="mongodb://"):
        load_settings({"mongodb_url": "http://nope"}, env={})
    with pytest.raises(ConfigError, match="mongodb_max_doc_bytes"):
        load_settings({"mongodb_max_doc_bytes": 20 * 2**20}, env={})
    for bad in ("", "a$b"):  # before: pymongo's "name must be an instance of str" at first use
        with pytest.raises(ConfigError, match="^mongodb_collection must be a collection name"):
            load_settings(env={"RUNTIME_MONGODB_COLLECTION": bad})
    out = cli(mongo_settings, "jobs", **{**mongo_env(mongo_settings), "mongodb_collection": ""})
    assert out.exit_code == 2 and out.stderr.startswith("error: mongodb_collection must be") and \
        len(out.stderr.splitlines()) == 1, out.stderr
    try:
        import opentelemetry.instrumentation.pymongo  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="otel-clients"):
            Client(mongo_settings.replace(trace_clients=1))


def test_mongodb_outage_pauses_claiming_and_loses_nothing(mongo_settings, mongo_db, worker, caplog):
    from tcp_proxy import TcpProxy
    target = urlparse(mongo_settings.mongodb_url)
    proxy = TcpProxy((target.hostname, target.port))
    url = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
    s = mongo_settings.replace(mongodb_url=url, mongodb_timeout_s=0.5)
    client = Client(s)
    direct = MongoJobStore(mongo_settings, client.live)  # reads past the proxy
    caplog.set_level(logging.INFO, "runtime")
    w = worker.start(greenlets=2, **mongo_env(s))
    first = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    wait_until(lambda: (j := in_mongodb(direct, [first])[0]) and j.status == "success", 15, "a first job")
    running = client.queue_job("testtasks.sleep", {"seconds": 1.0})
    wait_until(lambda: (j := in_mongodb(direct, [running])[0]) and j.status == "started", 10, "the long job to start")
    proxy.down()
    # the running job ends meanwhile (recorded in Redis); the worker notices and stops claiming
    assert client.wait(running, timeout_s=15).status == "success"
    registry = redis.Redis.from_url(s.redis_url, decode_responses=True)
    keys = client.broker.keys
    wait_until(lambda: any(registry.hget(keys.worker(w), "state") == "degraded" for w in registry.smembers(keys.workers)),
               15, "the worker to report degraded")
    assert "MongoDB unreachable" in caplog.text
    waiting = client.queue_job("testtasks.add", {"a": 2, "b": 2})  # Redis takes it; MongoDB copy fails quietly
    wid = next(iter(registry.smembers(keys.workers)))
    beat = float(registry.hget(keys.worker(wid), "heartbeat_at"))
    wait_until(lambda: float(registry.hget(keys.worker(wid), "heartbeat_at") or 0) > beat + 1.0, 10,
               "a second of the degraded worker's life")
    assert client.live.get(waiting).status == "queued"  # not claimed while MongoDB is down
    proxy.up()
    assert client.wait(waiting, timeout_s=20).result == 4
    wait_until(lambda: [j and j.status for j in in_mongodb(direct, [running, waiting])] == ["success", "success"], 20,
               "both jobs in MongoDB after it came back")
    assert worker.alive(w)
    assert worker.stop(w) == 0
    proxy.down()


def test_a_worker_creates_the_indexes_again_after_mongodb_restarted_without_its_data(mongo_settings, worker, caplog):
    """Before: after MongoDB came back without its data, only ``_id_`` was left (no TTL
    index) until someone ran `runtime mongo ensure-indexes`."""
    from tcp_proxy import TcpProxy

    from runtime.store.mongo.deployment import markers_of
    target = urlparse(mongo_settings.mongodb_url)
    proxy = TcpProxy((target.hostname, target.port))
    s = mongo_settings.replace(mongodb_url=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                               mongodb_timeout_s=0.5)
    client = Client(s)
    direct = Client(mongo_settings).store  # past the proxy
    caplog.set_level(logging.INFO, "runtime")
    w = worker.start(**mongo_env(s))
    assert client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=15).status == "success"
    proxy.down()
    wait_until(lambda: w.state.value == "degraded", 15, "the worker to see the outage")
    direct.client.drop_database(direct.db.name)  # the server restarted without its data
    proxy.up()
    wait_until(lambda: set(INDEXES) <= set(direct.jobs.index_information()), 15, "the indexes again")
    lines = wait_until(lambda: [r.getMessage() for r in caplog.records if "of its indexes" in r.getMessage()], 10,
                       "the line that says so")  # logged once they are made
    assert len(lines) == 1 and f"had lost {len(INDEXES)} of its indexes" in lines[0], lines
    assert "runtime mongo reconcile --full" in lines[0]
    marker = wait_until(lambda: markers_of(direct.jobs).find_one({"_id": s.key_prefix}), 15, "the marker again")
    assert marker["deployment"] == w.mirror.store.deployment and marker["seen_by"] == w.id
    assert client.wait(client.queue_job("testtasks.add", {"a": 2, "b": 2}), timeout_s=15).result == 4
    assert worker.stop(w) == 0
    proxy.down()


def test_the_workers_own_copies_land_without_the_sweep(mclient, worker, mongo_settings):
    """Every claim and end reaches MongoDB through the worker's mirror alone (the sweep is
    pushed out of the way), even when a job changes again while its copy is in flight."""
    worker.start(**{**mongo_env(mongo_settings), "mongodb_sweep_interval_s": 3600, "mongodb_sweep_lag_s": 3600})
    ids = mclient.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(60)])
    mclient.wait(ids, timeout_s=20)
    wait_until(lambda: all(j and j.status == "success" for j in in_mongodb(mclient.store, ids)), 15,
               "every success copied by the worker")
    assert [j.result for j in in_mongodb(mclient.store, ids)] == [i + 1 for i in range(60)]


SPANS_SCRIPT = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from runtime.client import Client
from runtime.settings import load_settings
settings = load_settings({"redis_url": sys.argv[1], "key_prefix": sys.argv[2], "trace_clients": 1,
                          "middleware": ""}, env={})
with trace.get_tracer("t").start_as_current_span("parent") as parent:
    Client(settings).queue_job("testtasks.add", {"a": 1, "b": 2})
spans = exporter.get_finished_spans()
kids = [s for s in spans if s.parent is not None and s.parent.span_id == parent.get_span_context().span_id]
print(sorted({s.attributes.get("db.system") or s.attributes.get("db.system.name") or "" for s in kids}))
"""


def test_trace_clients_makes_child_spans_of_redis_calls(settings):
    pytest.importorskip("opentelemetry.instrumentation.redis", reason="extra otel-clients not installed")
    out = subprocess.run([sys.executable, "-c", SPANS_SCRIPT, settings.redis_url, settings.key_prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "redis" in out.stdout


def test_requeue_a_job_only_mongodb_still_has(mclient, worker, mongo_settings):
    job_id = mclient.queue_job("tasks_example.work.fail", {"message": "old"})
    worker.start(**mongo_env(mongo_settings))
    wait_until(lambda: mclient.store.get(job_id).status == "failed", 15, "the failure in MongoDB")
    keys = mclient.broker.keys
    mclient.redis.delete(keys.job(job_id))  # its Redis copy expired
    assert mclient.requeue(job_id) == [job_id]
    job = wait_until(lambda: (j := mclient.store.get(job_id)).attempt == 2 and j.status == "failed" and j, 15,
                     "the requeued job to run again")
    notes = [h.get("note") or "" for h in job.history]
    assert any("restored from MongoDB" in n for n in notes) and job.retries == 0
    mclient.redis.delete(keys.job(job_id))
    assert mclient.requeue_where("failed", path="tasks_example.work.fail") == [job_id]


def test_a_full_backlog_stops_claiming_until_half_is_copied(mongo_settings, client):
    """Back-pressure (in-process, on the gevent hub): a MongoDB slower than the worker
    slows its claims instead of falling ever further behind."""
    from runtime.store.mongo.mirror import MAX_BACKLOG, Mirror
    mirror = Mirror(client.broker, Client(mongo_settings).store)
    mirror.changed(f"gone{i}" for i in range(MAX_BACKLOG))
    assert not mirror.claim_allowed and mirror.healthy
    mirror.start()
    assert mirror.wait_healthy(30) and mirror.claim_allowed and len(mirror.pending) <= MAX_BACKLOG // 2
    wait_until(lambda: not mirror.pending, 30, "the whole backlog copied")
    mirror.stop(timeout_s=1)


UNSTORABLE = {"big": 2**64, "k\u0000ey": [1, -2**70]}  # valid JSON, refused by BSON


def test_a_value_bson_refuses_is_converted_where_it_stands_and_never_stops_the_sweep(mongo_settings, worker, caplog):
    s = mongo_settings
    client = Client(s)
    keys = client.broker.keys
    # written by Redis only (as after a crash), next to storable ones: the sweep copies all
    crashed = _redis_only(client)
    early = crashed.queue_job("mongotasks.echo", {"value": UNSTORABLE}, delay=300)
    crashed.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 2, delay=300)
    report = client.mongo.reconcile(lag_s=0)
    assert report.written == 3 and client.mongo.reconcile(lag_s=0).written == 0
    assert client.store.get(early).params == {"value": UNSTORABLE}
    # run by a worker: every copy of the job (queued, started, success) is stored
    job_id = client.queue_job("mongotasks.echo", {"value": UNSTORABLE})
    worker.start(**mongo_env(s))
    assert client.wait(job_id, timeout_s=15).result == UNSTORABLE
    job = wait_until(lambda: (j := client.store.get(job_id)).status == "success" and j, 15, "the success in MongoDB")
    assert job.result == UNSTORABLE and job.params == {"value": UNSTORABLE}
    raw = client.store.jobs.find_one({"_id": job_id})
    # each value converted where it stands: the shape of params and result is kept
    assert raw["params"] == {"value": {"big": str(2**64), "k%00ey": [1, str(-2**70)]}}
    assert raw["result"] == raw["params"]["value"]
    assert set(raw["converted"]) == {"int:params.value.big", "int:params.value.k%00ey.1", "keys:params.value",
                                     "int:result.big", "int:result.k%00ey.1", "keys:result"}
    # Redis forgets the job (its ttl_s passed); the sweeps never queue it again (its end reached MongoDB)
    client.redis.delete(keys.job(job_id))
    assert client.mongo.reconcile(lag_s=0).adopted == 0
    assert client.store.get(job_id).attempt == 1 and client.store.get(job_id).status == "success"
    caplog.clear()
    out = cli(s, "mongo", "reconcile", **mongo_env(s))
    complaints = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert out.exit_code == 0 and out.stderr == "" and complaints == [], (out.stderr, complaints)


def test_one_document_mongodb_refuses_never_stops_its_batch(mclient, mongo_settings):
    from runtime.job import Job
    from runtime.status import Status
    docs = [document(Job(f"j{i}", "p", {}, "default", 0, Status.QUEUED, queued_at=1.0,
                         history=[{"at": 1.0, "status": "queued"}]), 1, mongo_settings) for i in range(3)]
    docs[1]["params"] = {"x": 2**64}  # not made storable: fails to encode, alone
    assert mclient.mongo.store.write(docs) == (2, 0)
    assert [j and j.id for j in mclient.store.get_many(["j0", "j1", "j2"])] == ["j0", None, "j2"]


@pytest.mark.timing
def test_a_cli_command_with_mongodb_costs_little_more_than_without(mclient, mongo_settings):
    """pymongo joins its monitor threads at exit (0.5 s steps): the CLI closes its client
    and skips that wait. Medians of whole commands, with and without --mongodb."""
    import statistics
    import time
    env = worker_env(mongo_settings, mongodb_database=mongo_settings.mongodb_database)
    mclient.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 5)

    def run(mongo: bool) -> float:
        argv = [sys.executable, "-m", "runtime", *(["--mongodb", mongo_settings.mongodb_url] if mongo else []), "jobs"]
        t = time.perf_counter()
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return time.perf_counter() - t

    without = statistics.median(run(False) for _ in range(3))
    with_ = statistics.median(run(True) for _ in range(3))
    assert with_ - without < 0.3, f"with MongoDB {with_:.3f} s, without {without:.3f} s"


def test_producers_fail_fast_during_a_mongodb_outage(mongo_settings, caplog):
    """A producer's copy is best effort: a short timeout, then a circuit breaker skips
    MongoDB for a while; one short warning line per failure; Redis has every job."""
    import logging
    import time
    s = mongo_settings.replace(mongodb_url="mongodb://127.0.0.1:1/?directConnection=true", mongodb_timeout_s=5.0)
    client = Client(s)
    caplog.set_level(logging.WARNING, logger="runtime.client")
    t = time.monotonic()
    ids = [client.queue_job("testtasks.add", {"a": 1, "b": 1}) for _ in range(3)]
    ids += client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 2, delay=60)
    client.cancel(ids[-1])
    assert time.monotonic() - t < 2.5  # was 5 s per call
    assert [j.status for j in client.live.get_many(ids)] == ["queued"] * 4 + ["cancel"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "runtime.client"]
    assert len(warnings) == 1 and "\n" not in warnings[0] and len(warnings[0]) < 300, warnings
    assert "the reconcile sweep will" in warnings[0] and "skipped for 10 s" in warnings[0]


def test_bad_mongodb_urls_give_one_line_and_exit_2_or_4(mongo_settings):
    """Config mistakes exit 2 (usage/bad config), a host that cannot be reached or
    resolved exits 4 (unavailable); always one short line, never a traceback."""
    host = urlparse(mongo_settings.mongodb_url).netloc
    cases = [("mongodb://", 2, "bad mongodb_url"),
             ("mongodb://host:notaport/", 2, "bad mongodb_url"),
             ("mongodb://127.0.0.1:1/bad db", 2, "bad mongodb_url"),
             ("mongodb+srv://nonexist.invalid/x", 4, "MongoDB unavailable"),
             (f"mongodb://u:wrong@{host}/db?directConnection=true&authSource=admin", 2, "refused the credentials"),
             ("mongodb://127.0.0.1:1/?directConnection=true", 4, "MongoDB unavailable")]
    for url, code, text in cases:
        for cmd in (["jobs"], ["mongo", "reconcile"]):
            r = cli(mongo_settings, "--mongodb", url, *cmd, mongodb_timeout_s=0.5)
            line = r.stderr
            assert (r.exit_code, len(line.splitlines())) == (code, 1), (url, cmd, r.exit_code, line)
            assert line.startswith("error: ") and text in line and len(line) < 200 and "wrong" not in line, (url, line)


def test_bad_url_options_are_one_line_and_exit_2(mongo_settings):
    """Before: pymongo's two-line UserWarning (with a site-packages path) and the command
    went on without the option; ``w=majorityx`` was taken."""
    host = urlparse(mongo_settings.mongodb_url).netloc
    cases = [("bogusOption=1", "unknown option bogusOption"), ("w=-3", "w must be a non negative integer"),
             ("authMechanism=BOGUS", "authmechanism must be in"), ("w=majorityx", "w must be a number or 'majority'")]
    for option, text in cases:
        url = f"mongodb://{host}/?directConnection=true&{option}"
        out = subprocess.run([sys.executable, "-m", "runtime", "jobs"], env=worker_env(mongo_settings, mongodb_url=url),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith("error: bad mongodb_url: "), (option, out.stderr)
        assert len(out.stderr.splitlines()) == 1 and text in out.stderr, (option, out.stderr)
    for w in ("majorityx", "0"):  # w=0 is unacknowledged: the version fence needs replies
        with pytest.raises(ConfigError, match="mongodb_w must be a number >= 1 or 'majority'"):
            load_settings({"mongodb_w": w}, env={})
    for path in ("bad.db", "x" * 64):  # pymongo would read "bad.db" as database "bad"
        url = f"mongodb://{host}/{path}?directConnection=true"
        out = subprocess.run([sys.executable, "-m", "runtime", "jobs"], env=worker_env(mongo_settings, mongodb_url=url),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith(f"error: bad MongoDB database name '{path}': "), out.stderr
        assert len(out.stderr.splitlines()) == 1


def test_a_worker_does_not_start_while_mongodb_is_unreachable(mongo_settings, worker, client):
    """Issue 19, finding 6: a worker (--burst or not) checks MongoDB before claiming; an
    unreachable one is StoreUnavailable (exit code 4), a job waits in Redis meanwhile."""
    s = mongo_settings.replace(mongodb_url="mongodb://127.0.0.1:1/?directConnection=true", mongodb_timeout_s=0.3)
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    for burst in (True, False):
        w = worker.make(**mongo_env(s))
        with pytest.raises(StoreUnavailable, match="^MongoDB unavailable: 127.0.0.1:1: .*refused$"):
            w.run(burst=burst)
    assert client.live.get(job_id).status == "queued" and not client.redis.smembers(client.broker.keys.workers)


def test_burst_worker_ends_during_an_outage_once_nothing_is_left_with_exit_4(mongo_settings, worker, client, caplog):
    """MongoDB goes away under a --burst worker: once nothing it claimed is running it ends
    with exit code 4 (UNAVAILABLE: documents were left to the sweep), not 0, saying how many
    jobs it left queued. Before: a ready job kept it waiting for MongoDB forever."""
    import gevent
    from tcp_proxy import TcpProxy
    target = urlparse(mongo_settings.mongodb_url)
    proxy = TcpProxy((target.hostname, target.port))
    s = mongo_settings.replace(mongodb_url=f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true",
                               mongodb_timeout_s=0.5)
    caplog.set_level(logging.INFO, "runtime")
    running = client.queue_job("testtasks.sleep", {"seconds": 2.5})  # longer than seeing the outage (~1 s)
    waiting = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    delayed = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    w = worker.make(**mongo_env(s), greenlets=1, prefetch=0)
    g = gevent.spawn(w.run, True)
    mongo = Client(mongo_settings).store  # MongoDB's documents, past the proxy
    wait_until(lambda: client.live.get(running).status == "started", 10, "the long job to start")
    wait_until(lambda: mongo.jobs.find_one({"_id": running, "status": "started"}), 10, "MongoDB to say started")
    proxy.down()
    wait_until(lambda: "MongoDB unreachable" in caplog.text, 15, "the worker to find MongoDB down")
    assert client.wait(running, timeout_s=15).status == "success"
    g.join(15)
    assert g.dead and g.value == 4
    assert [j.status for j in client.live.get_many([waiting, delayed])] == ["queued", "queued"]
    ended = [r.getMessage() for r in caplog.records if "--burst ends" in r.getMessage()]
    assert len(ended) == 1 and "2 jobs left queued in Redis" in ended[0] and "runtime mongo reconcile" in ended[0], ended
    proxy.up()
    # MongoDB's document still says started; the worker handed the job over, so reads take
    # it from Redis until a worker copies it (before: `started` until a reconcile)
    assert mongo.jobs.find_one({"_id": running})["status"] == "started"
    assert Client(mongo_settings).get_job(running).status == "success"


def test_mongodb_keeps_history_longer_than_redis(mongo_settings, worker):
    """mongodb_ttl_s (months by default) is MongoDB's, independent of Redis's ttl_s."""
    from runtime.settings import DAY_S
    defaults = load_settings(env={})
    assert defaults.mongodb_ttl_s["success"] >= 30 * DAY_S and defaults.mongodb_ttl_s["failed"] >= 30 * DAY_S
    assert load_settings({"mongodb_ttl_s": "success:0"}, env={}).mongodb_ttl_s["success"] == 0
    with pytest.raises(ConfigError, match="mongodb_ttl_s"):
        load_settings({"mongodb_ttl_s": "queued:5"}, env={})
    s = mongo_settings.replace(ttl_s={"success": 1.0}, mongodb_ttl_s={"success": 7 * DAY_S, "failed": 0})
    client = Client(s)
    ok = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    bad = client.queue_job("tasks_example.work.fail", {})
    worker.start(**mongo_env(s), ttl_s="success:1", mongodb_ttl_s="success:604800,failed:0")
    assert client.wait(ok, timeout_s=15).status == "success"
    wait_until(lambda: (j := in_mongodb(client.store, [ok])[0]) and j.status == "success", 15, "the success in MongoDB")
    wait_until(lambda: not client.redis.exists(client.broker.keys.job(ok)), 15, "Redis to forget the success")
    job = client.store.get(ok)  # MongoDB still has it
    assert job.status == "success" and job.result == 2
    raw = client.store.jobs.find_one({"_id": ok})
    assert raw["expire_at"] - raw["ended_at"] == pytest.approx(timedelta(days=7), abs=timedelta(milliseconds=2))
    wait_until(lambda: (j := in_mongodb(client.store, [bad])[0]) and j.status == "failed", 15, "the failure in MongoDB")
    assert "expire_at" not in client.store.jobs.find_one({"_id": bad})  # 0: kept forever


def test_reconcile_full_refills_a_mongodb_that_lost_its_data(mclient, worker, mongo_settings):
    ids = mclient.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(5)])
    waiting = mclient.queue_job("testtasks.add", {"a": 0, "b": 0}, delay=300)
    worker.start(**mongo_env(mongo_settings))
    mclient.wait(ids, timeout_s=15)
    wait_until(lambda: all(j and j.status == "success" for j in in_mongodb(mclient.store, ids)), 15, "the copies")
    assert mclient.mongo.reconcile(lag_s=0).written == 0
    mclient.store.jobs.delete_many({})  # MongoDB lost everything; the watermark has moved on
    assert mclient.mongo.reconcile(lag_s=0).written == 0  # the ordinary sweep cannot see it
    out = cli(mongo_settings, "mongo", "reconcile", "--full", "--json", **mongo_env(mongo_settings))
    assert out.exit_code == 0 and '"written": 6' in out.stdout, out.stdout + out.stderr
    assert [j.result for j in in_mongodb(mclient.store, ids)] == [i + 1 for i in range(5)]
    assert in_mongodb(mclient.store, [waiting])[0].status == "queued"
    assert mclient.mongo.reconcile_full().written == 0
