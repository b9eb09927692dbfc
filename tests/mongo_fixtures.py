"""Fixtures for the MongoDB job store: one wire server per session, one database per test.

The server is ``MONGODB_URL`` when set (any real MongoDB runs the same tests), else
mongoeco's wire server started from its own Python 3.13 venv (tests/mongo_server.py,
built on first use and by .ci/run). Without either, MongoDB tests fail under CI (env CI
set) and are skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import mongo_server
import pytest

from runtime.settings import Settings

#: Settings of every MongoDB test: a fast sweep, a short timeout for outage tests.
MONGO_FAST = {"mongodb_sweep_interval_s": 0.5, "mongodb_sweep_lag_s": 0.5, "mongodb_timeout_s": 2.0}


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url
        return
    try:
        import pymongo  # noqa: F401
        proc, url = mongo_server.start()
    except Exception as exc:  # noqa: BLE001
        reason = f"no MongoDB for the tests: MONGODB_URL unset and mongoeco's server unavailable ({exc})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001
            proc.kill()


@pytest.fixture
def mongo_db(mongo_url: str) -> Iterator[str]:
    """A database of this test's own, dropped at teardown."""
    import pymongo
    name = "rt_" + uuid.uuid4().hex[:12]
    yield name
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def mongo_settings(settings: Settings, mongo_url: str, mongo_db: str) -> Settings:
    return settings.replace(mongodb_url=mongo_url, mongodb_database=mongo_db, **MONGO_FAST)


def mongo_env(s: Settings) -> dict[str, Any]:
    """Worker settings (for ``workers.start(**...)``) that point it at ``s``'s MongoDB."""
    return {"mongodb_url": s.mongodb_url, "mongodb_database": s.mongodb_database,
            "task_modules": "tasks_example,testtasks,mongotasks",
            **{k: v for k, v in MONGO_FAST.items() if k != "mongodb_timeout_s"},
            "mongodb_timeout_s": s.mongodb_timeout_s}


def in_mongodb(store: Any, ids: list[str]) -> list[Any]:
    """The jobs of ``ids`` as MongoDB itself holds them (None where it has none): the
    collection, not the store's reads, which take pending or missing jobs from Redis."""
    from runtime.store.mongo.documents import job_from_document
    found = {d["_id"]: job_from_document(d) for d in store.jobs.find({"_id": {"$in": list(ids)}})}
    return [found.get(i) for i in ids]
