"""One deployment per collection: who owns a MongoDB job collection, checked at first use.

A deployment is one Redis database and one key prefix: the jobs, queues and the sweep's
watermarks under ``{prefix}:`` in that database. Two deployments writing one collection
take each other's jobs: the reconcile sweep queues again in its own Redis every waiting
document its Redis does not have, and the reads and counts mix both. So a collection
belongs to one deployment, recorded in a marker document of its companion collection
``<collection>.deployments`` (kept apart so that users' queries and counts over the job
collection see jobs only):

    {"_id": prefix, "deployment": id, "redis": "redis://host:6379/0", "shared": false,
     "created_at": date, "checked_at": date,
     "seen_at": date, "seen_for_s": 30.0, "seen_redis": run id, "seen_by": worker id}

``id`` is random, made at first use and kept in Redis (``{prefix}:mongo:deployment``), so
it moves with the Redis data (a restore, a new host) where an address would not.
:func:`check_owner` runs before a process first reads or writes the collection (the
worker at start, a client at its first read or enqueue) and raises ConfigError (CLI exit
code 2, one line saying who owns it) when:

- another deployment's marker is there, unless every deployment sharing it sets
  ``mongodb_shared = 1`` (each then filters by its prefix, and so must users' queries);
- this prefix's marker holds another id: a second Redis (another server or database)
  with the same prefix. When this Redis has no id at all, it is taken as the same
  deployment if its address is the one recorded (the Redis lost its data: the sweep
  then queues again from MongoDB what it lost), unless the owner is alive on another
  server (below): an independent empty Redis at the same address (another host's
  ``localhost``) must not take its jobs over. Else ``runtime mongo attach`` says so
  explicitly (a Redis that replaced the old one, gone for good);
- the collection, first used here, already holds jobs of other prefixes (written before
  markers existed) and sharing is not set.

Liveness. The owner's workers say they are alive in its marker (:func:`touch`, every
``mongodb_sweep_interval_s``): ``seen_at``, the run id of the Redis server they use
(``seen_redis``, new at each server start) and ``seen_for_s`` (ALIVE_SWEEPS sweep
intervals: 30 s by default). While the owner was seen within ``seen_for_s``,
``runtime mongo attach`` is refused (unless ``--force``), and an empty Redis at the
recorded address is adopted only when it is the server the workers were seen on (a
``FLUSHALL``); a restarted server is adopted once the workers reconnect to it (they
record its run id) or once they have not been seen for ``seen_for_s``. A worker whose
touch finds another deployment's id has lost the collection (attached elsewhere): it
stops writing and claiming (runtime.store.mongo.mirror). Times are each host's clock:
hosts' clocks must agree within a few seconds.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import redis as redis_lib

from ...broker.keys import Keys
from ...errors import ConfigError, NotTheOwner

log = logging.getLogger("runtime.mongo")

#: Suffix of the companion collection holding the deployment markers.
MARKERS = ".deployments"
#: A collection without a prefix-led index is scanned for other prefixes only up to this
#: many documents (the check runs once, when the marker is first written).
FOREIGN_SCAN_MAX = 100_000
#: The owner counts as alive this many sweep intervals after a worker of it last said so.
ALIVE_SWEEPS = 3


def redis_address(client: redis_lib.Redis) -> str:
    """Where ``client`` points, without credentials: ``redis://host:port/db``,
    ``unix:///path?db=N`` or ``redis+cluster://host:port,...`` (the nodes it was given)."""
    if isinstance(client, redis_lib.RedisCluster):
        return "redis+cluster://" + ",".join(sorted(client.nodes_manager.startup_nodes))
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def markers_of(jobs: Any) -> Any:
    """The collection of deployment markers of the job collection ``jobs``."""
    return jobs.database[jobs.name + MARKERS]


def check_owner(jobs: Any, client: redis_lib.Redis, prefix: str, shared: bool) -> str:
    """Refuse (ConfigError) a job collection owned by another deployment; record this one
    as its owner when nobody is (see the module docstring). Returns this deployment's id.
    Raises pymongo's and redis's errors when either cannot be reached."""
    markers = markers_of(jobs)
    id_key = Keys(prefix).mongo("deployment")
    here = redis_address(client)
    found = {m["_id"]: m for m in markers.find({})}
    others = [m for p, m in found.items() if p != prefix]
    if others and not (shared and all(m.get("shared") for m in others)):
        raise NotTheOwner(_taken(jobs, others[0], shared))
    mine = client.get(id_key)
    ours = found.get(prefix)
    if ours is None:
        if not others and not shared:
            _refuse_foreign_documents(jobs, prefix)
        if mine is None:
            client.set(id_key, os.urandom(8).hex(), nx=True)
            mine = client.get(id_key)
        from pymongo.errors import DuplicateKeyError
        now = datetime.now(UTC)
        try:
            markers.insert_one({"_id": prefix, "deployment": mine, "redis": here, "shared": shared,
                                "created_at": now, "checked_at": now})
            return str(mine)
        except DuplicateKeyError:  # another process of a deployment recorded it meanwhile
            ours = markers.find_one({"_id": prefix})
    if mine is None and ours.get("redis") == here:
        _refuse_another_server(jobs, client, ours, here)
        client.set(id_key, ours["deployment"], nx=True)
        mine = client.get(id_key)
        log.warning("this Redis (%s) has no deployment id for prefix %r: taken as the owner of %s again "
                    "(it is the Redis recorded there, which lost its data)", here, prefix, jobs.full_name)
    if mine != ours["deployment"]:
        raise NotTheOwner(_other_redis(jobs, ours, here, mine is None))
    if ours.get("redis") != here or bool(ours.get("shared")) != shared:
        markers.update_one({"_id": prefix}, {"$set": {"redis": here, "shared": shared,
                                                      "checked_at": datetime.now(UTC)}})
    return str(mine)


def attach(jobs: Any, client: redis_lib.Redis, prefix: str, force: bool = False) -> tuple[str, bool]:
    """Make this Redis the owner of ``prefix``'s history in ``jobs`` (``runtime mongo
    attach``): a new deployment id is recorded in both, so that the Redis recorded before
    is refused from now on, and its workers, were any still running, stop. Returns (the
    id, whether it changed: False when this Redis owns it already).

    Raises ConfigError when there is no marker of that prefix to take over, or, unless
    ``force``, while a worker of the owner was seen alive within its window (it would
    go on running the jobs this Redis would queue again: each would run twice)."""
    markers = markers_of(jobs)
    ours = markers.find_one({"_id": prefix})
    if ours is None:
        raise ConfigError(f"{jobs.full_name} has no deployment of key prefix {prefix!r} to attach to")
    mine = client.get(Keys(prefix).mongo("deployment"))
    if mine is not None and mine == ours.get("deployment"):
        return str(mine), False
    ago = seen_ago(ours)
    if ago is not None and not force:
        window = float(ours.get("seen_for_s") or 0.0)
        raise ConfigError(
            f"{jobs.full_name} (key prefix {prefix!r}) belongs to the Redis at {ours.get('redis')}, whose worker "
            f"{ours.get('seen_by')} was seen {ago:.0f} s ago: attach is for a Redis that replaced one gone for good; "
            f"refused while its workers may run (stopped ones count for {window:.0f} s after they were last seen; "
            f"--force takes it over at once, and jobs the old one holds may then run on both until its workers "
            f"notice, within a sweep)")
    deployment = os.urandom(8).hex()
    markers.update_one({"_id": prefix}, {
        "$set": {"deployment": deployment, "redis": redis_address(client), "checked_at": datetime.now(UTC)},
        "$unset": {"seen_at": "", "seen_for_s": "", "seen_redis": "", "seen_by": ""}})
    client.set(Keys(prefix).mongo("deployment"), deployment)
    return deployment, True


def touch(jobs: Any, client: redis_lib.Redis, prefix: str, deployment: str, worker: str, alive_s: float,
          shared: bool) -> dict[str, Any] | None:
    """Record that ``worker`` of ``deployment`` is alive now, for ``alive_s`` seconds (see
    the module docstring), re-creating the marker if MongoDB lost it. Returns None while
    the collection is this deployment's, else the marker of the deployment that took it
    over (``runtime mongo attach``). Raises redis's and pymongo's errors."""
    from pymongo.errors import DuplicateKeyError
    now = datetime.now(UTC)
    seen = {"seen_at": now, "seen_for_s": alive_s, "seen_redis": redis_run_id(client), "seen_by": worker}
    markers = markers_of(jobs)
    try:
        markers.update_one({"_id": prefix, "deployment": deployment}, {"$set": seen, "$setOnInsert": {
            "redis": redis_address(client), "shared": shared, "created_at": now, "checked_at": now}}, upsert=True)
        return None
    except DuplicateKeyError:  # the marker holds another id
        return markers.find_one({"_id": prefix}) or {"_id": prefix}


def seen_ago(marker: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds since a worker of ``marker``'s deployment said it was alive, when that was
    within the window it gave (``seen_for_s``); None when not (or never)."""
    seen = marker.get("seen_at")
    if not isinstance(seen, datetime):
        return None
    ago = ((now or datetime.now(UTC)) - (seen if seen.tzinfo else seen.replace(tzinfo=UTC))).total_seconds()
    return max(0.0, ago) if ago < float(marker.get("seen_for_s") or 0.0) else None


def redis_run_id(client: redis_lib.Redis) -> str | None:
    """The run id of the Redis server behind ``client`` (a new one at each server start), or
    None when it does not give one (a Cluster client)."""
    info = client.info("server")
    run_id = info.get("run_id") if isinstance(info, dict) else None
    return run_id if isinstance(run_id, str) else None


def _refuse_another_server(jobs: Any, client: redis_lib.Redis, ours: dict[str, Any], here: str) -> None:
    """An empty Redis at the recorded address: raise ConfigError when the owner's workers
    were seen alive (within their window) on another Redis server, which this one is."""
    ago = seen_ago(ours)
    if ago is None or ours.get("seen_redis") == redis_run_id(client):
        return
    window = float(ours.get("seen_for_s") or 0.0)
    raise NotTheOwner(
        f"{jobs.full_name} belongs to key prefix {ours['_id']!r} of the Redis at {here}, whose worker "
        f"{ours.get('seen_by')} was seen {ago:.0f} s ago on another Redis server; this Redis at that address "
        f"has no record of owning it (another server, not the owner's: refused rather than taking its jobs "
        f"over). Give it its own mongodb_collection or mongodb_database (or key prefix); if the owner's Redis "
        f"lost its data, this passes once its workers reconnect or have not been seen for {window:.0f} s")


def _refuse_foreign_documents(jobs: Any, prefix: str) -> None:
    """Raise ConfigError when ``jobs`` holds documents of other prefixes (written before
    markers existed). Asked once, when the marker is first written: through an index led
    by ``prefix`` when one is left from the layout before, else only on a collection of
    at most FOREIGN_SCAN_MAX documents."""
    indexed = any(info["key"][0][0] == "prefix" for info in jobs.index_information().values())
    if not indexed and jobs.estimated_document_count() > FOREIGN_SCAN_MAX:
        return
    prefixes = sorted(str(p) for p in jobs.distinct("prefix") if p != prefix and p is not None)
    if prefixes:
        raise NotTheOwner(
            f"{jobs.full_name} holds jobs of other key prefixes ({', '.join(prefixes[:3])}): a collection "
            f"belongs to one deployment; give this one its own mongodb_collection or mongodb_database, or set "
            f"mongodb_shared = 1 on every deployment that shares it")


def _taken(jobs: Any, other: dict[str, Any], shared: bool) -> str:
    how = ("it is not shared (set mongodb_shared = 1 on it too)" if shared
           else "give this deployment its own mongodb_collection or mongodb_database, or set "
                "mongodb_shared = 1 on every deployment that shares it")
    return (f"{jobs.full_name} belongs to another deployment (key prefix {other['_id']!r}, Redis "
            f"{other.get('redis')}): {how}")


def _other_redis(jobs: Any, ours: dict[str, Any], here: str, no_id: bool) -> str:
    what = "has no record of owning it" if no_id else "is another deployment"
    return (f"{jobs.full_name} belongs to key prefix {ours['_id']!r} of the Redis at {ours.get('redis')}; "
            f"this Redis ({here}) {what}. Two Redis databases with one prefix must not share a collection: "
            f"give this one its own mongodb_collection or mongodb_database (or key prefix); if that Redis is "
            f"gone for good and this one replaced it, run `runtime mongo attach`")
