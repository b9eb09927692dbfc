"""One deployment per collection (issue 19, finding 3): a second deployment pointing at a
job collection it does not own is refused before it reads, queues or sweeps anything;
deployments share one only when each says so."""

from __future__ import annotations

import logging

import pytest
import redis
from helpers import cli, redis_server_in, wait_until
from mongo_fixtures import mongo_env

from runtime.client import Client
from runtime.errors import ConfigError
from runtime.store.mongo.deployment import markers_of, redis_address

OTHER_DB = 6


@pytest.fixture
def db6(mongo_settings):
    """Settings of a deployment on database 6 of the same Redis, with the same prefix and
    MongoDB database (the finding's setup); its keys are deleted at teardown."""
    s = mongo_settings.replace(redis_url=f"{mongo_settings.redis_url}?db={OTHER_DB}")
    yield s
    r = redis.Redis.from_url(s.redis_url)
    keys = list(r.scan_iter(match=f"{s.key_prefix}:*"))
    if keys:
        r.delete(*keys)


@pytest.fixture
def other_redis(tmp_path):
    """The URL of a redis-server of this test's own: another server, empty."""
    with redis_server_in(tmp_path, name="other.sock") as url:
        yield url


def _greenlet(worker, w):
    return next(g for x, g in worker.running if x is w)


def test_a_second_redis_with_the_same_prefix_is_refused(mongo_settings, db6, worker):
    """Before: ``mongo reconcile`` from db 6 queued db 0's delayed job again in db 6, and
    ``queues``/``jobs`` mixed both deployments."""
    first = Client(mongo_settings)
    delayed = first.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    second = Client(db6)
    for call in (lambda: second.queue_job("testtasks.add", {"a": 1, "b": 1}), lambda: second.get_job(delayed),
                 lambda: second.reader.jobs(), lambda: second.reader.queues(), lambda: second.mongo.repair(0.0)):
        with pytest.raises(ConfigError, match="belongs to key prefix .* this Redis .* has no record of owning it"):
            call()
    assert second.live.get_many([delayed]) == [None] and second.redis.dbsize() == 0  # nothing queued in db 6
    for args in (["jobs"], ["queues"], ["mongo", "reconcile"], ["enqueue", "testtasks.add", "{\"a\": 1, \"b\": 1}"]):
        out = cli(db6, *args, **mongo_env(db6))
        assert out.exit_code == 2 and len(out.stderr.splitlines()) == 1, (args, out.stderr)
        assert "runtime mongo attach" in out.stderr and "mongodb_collection" in out.stderr
    with pytest.raises(ConfigError, match="belongs to key prefix"):
        worker.make(**mongo_env(db6), redis_url=db6.redis_url).run(burst=True)
    assert second.redis.dbsize() == 0
    assert first.reader.jobs().jobs[0].id == delayed  # the owner is untouched


def test_the_same_redis_after_losing_its_data_owns_its_history_again(mongo_settings, caplog):
    """A Redis with no deployment id at the address recorded in the marker lost its data:
    it is the same deployment, and the sweep queues again what it lost."""
    client = Client(mongo_settings)
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    keys = list(client.redis.scan_iter(match=f"{mongo_settings.key_prefix}:*"))
    client.redis.delete(*keys)  # Redis lost everything, the deployment id too
    caplog.set_level(logging.WARNING, "runtime.mongo")
    again = Client(mongo_settings)
    assert again.mongo.repair(0.0)["adopted"] == 1
    assert "lost its data" in caplog.text
    assert again.live.get(job_id).status == "queued"


def test_attach_hands_the_history_to_a_redis_that_replaced_the_old_one(mongo_settings, db6):
    first = Client(mongo_settings)
    job_id = first.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    out = cli(db6, "mongo", "attach", **mongo_env(db6))
    assert out.exit_code == 0 and "now owns" in out.stdout, out.stderr
    second = Client(db6)
    assert second.mongo.repair(0.0)["adopted"] == 1  # queued again in db 6 from MongoDB
    assert second.live.get(job_id).status == "queued"
    with pytest.raises(ConfigError, match="belongs to key prefix"):  # and the old Redis is refused now
        Client(mongo_settings).get_job(job_id)


def test_another_prefix_is_refused_unless_every_deployment_shares(mongo_settings):
    mine = Client(mongo_settings)
    mine.queue_job("testtasks.add", {"a": 1, "b": 1})
    other = mongo_settings.replace(key_prefix=mongo_settings.key_prefix + ":m2")  # cleaned with ours
    with pytest.raises(ConfigError, match="belongs to another deployment .*mongodb_shared = 1"):
        Client(other).queue_job("testtasks.add", {"a": 1, "b": 1})
    with pytest.raises(ConfigError, match="it is not shared"):  # the owner did not agree
        Client(other.replace(mongodb_shared=1)).queue_job("testtasks.add", {"a": 1, "b": 1})
    Client(mongo_settings.replace(mongodb_shared=1)).reader.jobs()  # the owner agrees
    Client(other.replace(mongodb_shared=1)).queue_job("testtasks.add", {"a": 1, "b": 1})
    with pytest.raises(ConfigError, match="belongs to another deployment"):  # sharing is for all or none
        Client(mongo_settings).reader.jobs()


def test_a_collection_holding_other_prefixes_jobs_from_before_is_refused(mongo_settings):
    client = Client(mongo_settings)
    client.store.jobs.insert_one({"_id": "old1", "prefix": "legacy", "status": "success", "path": "p"})
    with pytest.raises(ConfigError, match="holds jobs of other key prefixes \\(legacy\\)"):
        client.reader.jobs()
    Client(mongo_settings.replace(mongodb_shared=1)).reader.jobs()  # sharing on purpose


def test_deployments_sharing_a_collection_never_see_nor_adopt_each_others_jobs(worker, mongo_settings):
    """Two key prefixes sharing one MongoDB collection on purpose (mongodb_shared = 1 on
    each): reads, counts, the sweep and adoption stay within their own prefix."""
    shared = mongo_settings.replace(mongodb_shared=1)
    mclient = Client(shared)
    other = Client(shared.replace(key_prefix=shared.key_prefix + ":m2"))  # cleaned with ours
    theirs = other.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * 2)  # no worker on their prefix
    ours = mclient.queue_job("testtasks.add", {"a": 2, "b": 2})
    assert mclient.mongo.reconcile(lag_s=0).adopted == 0
    assert not any(mclient.redis.exists(mclient.broker.keys.job(i)) for i in theirs)
    worker.start(**mongo_env(shared), mongodb_shared=1)
    assert mclient.wait(ours, timeout_s=15).result == 4
    wait_until(lambda: mclient.store.get(ours).status == "success", 15, "our success in MongoDB")
    assert [j.id for j in mclient.store.list_jobs(limit=10)] == [ours]
    assert mclient.store.counts()["success"] == 1 and sum(mclient.store.counts().values()) == 1
    assert mclient.store.get_many(theirs) == [None, None]
    assert {j.id for j in other.store.list_jobs(limit=10)} == set(theirs)
    assert other.store.counts()["queued"] == 2 and sum(other.store.counts().values()) == 2
    assert [j.status for j in other.live.get_many(theirs)] == ["queued", "queued"]  # never run by our worker
    assert mclient.mongo.reconcile(lag_s=0).adopted == 0 and other.mongo.reconcile(lag_s=0).adopted == 0


def test_attach_is_refused_while_the_owner_runs_and_a_forced_one_stops_its_worker(mongo_settings, db6, worker,
                                                                                   caplog):
    """Before: `mongo attach` from db 6 took the collection from db 0's live worker; db 6
    then queued db 0's waiting job again (it would run twice) and db 0's worker went on
    writing the collection, never noticing."""
    first = Client(mongo_settings)
    waiting = first.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    w = worker.start(**mongo_env(mongo_settings))
    refused = cli(db6, "jobs", **mongo_env(db6))
    assert refused.exit_code == 2 and "if that Redis is gone for good" in refused.stderr, refused.stderr
    out = cli(db6, "mongo", "attach", **mongo_env(db6))
    assert out.exit_code == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert f"belongs to the Redis at {redis_address(first.redis)}, whose worker {w.id} was seen" in out.stderr
    assert "--force" in out.stderr
    assert redis.Redis.from_url(db6.redis_url).dbsize() == 0 and first.get_job(waiting).status == "queued"
    caplog.set_level(logging.ERROR, "runtime.mongo")
    forced = cli(db6, "mongo", "attach", "--force", **mongo_env(db6))
    assert forced.exit_code == 0 and "now owns" in forced.stdout, forced.stderr
    g = _greenlet(worker, w)
    wait_until(lambda: g.dead, 15, "db 0's worker to stop")
    assert g.value == 2
    lost = [r.getMessage() for r in caplog.records if "no longer belongs to this deployment" in r.getMessage()]
    assert len(lost) == 1 and redis_address(redis.Redis.from_url(db6.redis_url)) in lost[0], caplog.text
    assert not w.mirror.pending and w.mirror.exit_code == 2


def test_an_empty_redis_at_the_recorded_address_is_refused_while_the_owner_runs_elsewhere(mongo_settings,
                                                                                          other_redis, worker):
    """Before: an independent, empty Redis at the address recorded for the owner (say the
    ``localhost`` of another host) was taken for the owner's Redis that lost its data, and
    queued the owner's waiting jobs again. It is taken so only once the owner's workers
    have not been seen for their window."""
    first = Client(mongo_settings)
    waiting = first.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=300)
    w = worker.start(**mongo_env(mongo_settings))
    impostor = mongo_settings.replace(redis_url=other_redis)
    here = redis_address(redis.Redis.from_url(other_redis))
    # the owner recorded at the other server's address, as two hosts' localhost would be
    markers_of(first.store.jobs).update_one({"_id": mongo_settings.key_prefix}, {"$set": {"redis": here}})
    with pytest.raises(ConfigError, match=f"whose worker {w.id} was seen .* on another Redis server"):
        Client(impostor).reader.jobs()
    out = cli(impostor, "mongo", "reconcile", **mongo_env(impostor))
    assert out.exit_code == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert redis.Redis.from_url(other_redis).dbsize() == 0  # nothing taken over
    assert worker.stop(w) == 0

    def adopted() -> int:
        try:
            return int(Client(impostor).mongo.repair(0.0)["adopted"])
        except ConfigError:
            return 0
    assert wait_until(adopted, 15, "the owner's window to pass") == 1
    assert Client(impostor).live.get(waiting).status == "queued"


def test_info_shows_the_redis_side_when_the_collection_is_another_deployments(mongo_settings, db6):
    """`runtime info` is where a user looks when refused: it says which Redis, and whose
    collection, instead of refusing too (exit 0)."""
    Client(mongo_settings).queue_job("testtasks.add", {"a": 1, "b": 1})  # db 0 owns the collection
    r = cli(db6, "info", **mongo_env(db6))
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("mongodb   "))
    assert ": not this deployment's (" in line and "belongs to" in line, line
    assert "jobs      unknown (MongoDB not read)" in r.stdout and "redis     " in r.stdout
    assert cli(db6, "jobs", **mongo_env(db6)).exit_code == 2  # the reads themselves are refused
