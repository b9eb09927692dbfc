"""The MongoDB job document as users query it: times as dates, a top-level wait and run
time, the same shape whether a value was stored as is or had to be converted (issue 19,
findings 1 and 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import wait_until
from mongo_fixtures import in_mongodb, mongo_env

from runtime.client import Client
from runtime.job import Job
from runtime.status import Status
from runtime.store.mongo.documents import document, job_from_document


@pytest.fixture
def mclient(mongo_settings):
    return Client(mongo_settings)


def _final_in_mongodb(client, ids, status="success"):
    return wait_until(lambda: all(j and j.status == status for j in in_mongodb(client.store, ids)) and True, 15,
                      f"{status} of every job in MongoDB")


def test_times_are_dates_and_the_natural_query_finds_the_last_hours_jobs(mclient, worker, mongo_settings):
    """Finding 1: every time is a BSON date, so {"ended_at": {"$gte": now - 1 h}} finds
    the jobs that ended in the last hour (a float query found them, a date query none)."""
    ids = mclient.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(5)])
    worker.start(**mongo_env(mongo_settings))
    mclient.wait(ids, timeout_s=15)
    _final_in_mongodb(mclient, ids)
    raw = mclient.store.jobs
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert raw.count_documents({"ended_at": {"$gte": hour_ago}}) == 5
    assert raw.count_documents({"changed_at": {"$gte": hour_ago}, "status": "success"}) == 5
    doc = raw.find_one({"_id": ids[0]})
    for name in ("queued_at", "due_at", "started_at", "ended_at", "changed_at", "expire_at"):
        assert isinstance(doc[name], datetime), name
    assert [type(h["at"]) for h in doc["history"]] == [datetime] * 4  # queued, claimed, started, success
    assert isinstance(doc["wait_s"], float) and isinstance(doc["run_s"], float) and doc["run_s"] >= 0
    assert doc["schema"] == 3
    # read back as the Job's UNIX seconds, to the millisecond MongoDB keeps
    stored, live = mclient.store.get(ids[0]), mclient.live.get(ids[0])
    for name in ("queued_at", "due_at", "started_at", "ended_at"):
        assert getattr(stored, name) == pytest.approx(getattr(live, name), abs=0.001), name
    assert [h["at"] for h in stored.history] == pytest.approx([h["at"] for h in live.history], abs=0.001)
    assert stored.run_s == pytest.approx(live.run_s, abs=0.002) and doc["run_s"] == pytest.approx(live.run_s, abs=1e-6)


def test_one_bad_log_line_keeps_logs_a_list_of_lines(mclient, worker, mongo_settings):
    """Finding 5: a lone surrogate in one log line is escaped in that line only; logs stay
    a list of strings that queries match, and read back exactly as Redis has them."""
    job_id = mclient.queue_job("mongotasks.log_undecodable", {"name_hex": "ff"})
    worker.start(**mongo_env(mongo_settings))
    assert mclient.wait(job_id, timeout_s=15).status == "success"
    _final_in_mongodb(mclient, [job_id])
    raw = mclient.store.jobs.find_one({"_id": job_id})
    assert isinstance(raw["logs"], list) and all(isinstance(line, str) for line in raw["logs"])
    assert raw["logs"][:3] == ["[stdout] plain line before", "[stdout] opening \\udcff", "[stdout] plain line after"]
    assert raw["converted"] == ["text:logs.1"]
    assert mclient.store.jobs.count_documents({"logs": "[stdout] plain line after"}) == 1
    assert mclient.store.jobs.count_documents({"logs": {"$regex": "opening"}}) == 1
    assert mclient.store.get(job_id).logs == mclient.live.get(job_id).logs  # "opening \udcff" again


def test_keys_with_dollar_and_dot_are_escaped_in_place_and_read_back(mclient, worker, mongo_settings):
    """Finding 5: keys MongoDB 4.4 refuses (a dot, a leading $) are stored percent-escaped in
    their object (the rest of the document as given), queryable with plain paths."""
    params = {"user.id": 7, "$set": {"x": 1}, "plain": {"a": 1}, "100%": True}
    job_id = mclient.queue_job("mongotasks.echo", {"value": params})
    raw = mclient.store.jobs.find_one({"_id": job_id})
    assert raw["params"] == {"value": {"user%2Eid": 7, "%24set": {"x": 1}, "plain": {"a": 1}, "100%25": True}}
    assert raw["converted"] == ["keys:params.value"]
    assert mclient.store.jobs.count_documents({"params.value.user%2Eid": 7}) == 1
    assert mclient.store.get(job_id).params == {"value": params}
    worker.start(**mongo_env(mongo_settings))
    mclient.wait(job_id, timeout_s=15)
    _final_in_mongodb(mclient, [job_id])
    assert mclient.store.get(job_id).result == params
    assert mclient.store.jobs.count_documents({"result.%24set.x": 1, "params.value.plain.a": 1}) == 1


def test_documents_of_the_layout_before_are_still_read(mongo_settings):
    """Float times and whole-field JSON text (``as_json``) of earlier documents read as before."""
    old = {"_id": "j1", "prefix": "p", "path": "t.x", "status": "success", "queued_at": 100.5, "ended_at": 102.25,
           "history": [{"at": 100.5, "status": "queued"}, {"at": 102.25, "status": "success"}], "version": 2,
           "changed_at": 102.25, "result": {"unstorable": "too big", "json": str(2**70)}, "as_json": ["result"]}
    job = job_from_document(old)
    assert (job.queued_at, job.ended_at, job.result, job.history[1]["at"]) == (100.5, 102.25, 2**70, 102.25)
    new = document(job, 2, mongo_settings)
    assert new["ended_at"] == datetime.fromtimestamp(102.25, UTC) and new["converted"] == ["int:result"]
    back = job_from_document(new)
    assert (back.queued_at, back.ended_at, back.result) == (100.5, 102.25, 2**70)
    assert Job("j2", "t.x", status=Status.QUEUED).status == job_from_document(document(
        Job("j2", "t.x", status=Status.QUEUED), 0, mongo_settings)).status


def test_migrate_rewrites_documents_of_the_layout_before(mongo_settings, caplog):
    """Float times do not match date queries: ``runtime mongo migrate`` rewrites them
    (workers say so at start while any is left)."""
    import logging

    from helpers import cli

    client = Client(mongo_settings)
    new_id = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=600)
    t = float(int(datetime.now(UTC).timestamp()) - 86400)  # a day ago, in whole seconds
    old = {"_id": "old1", "prefix": mongo_settings.key_prefix, "path": "t.x", "status": "success", "queued_at": t,
           "started_at": t + 1.0, "ended_at": t + 2.25, "version": 3, "changed_at": t + 2.25,
           "history": [{"at": t, "status": "queued"}, {"at": t + 1.0, "status": "started"},
                       {"at": t + 2.25, "status": "success"}],
           "params": {"unstorable": "x", "json": '{"big": 18446744073709551616}'}, "as_json": ["params"]}
    client.store.jobs.insert_one(old)
    caplog.set_level(logging.WARNING, "runtime.mongo")
    client.store.ensure_indexes()
    assert "runtime mongo migrate" in caplog.text
    out = cli(mongo_settings, "mongo", "migrate", **mongo_env(mongo_settings))
    assert out.exit_code == 0 and "rewrote 1 job documents" in out.stdout, out.stderr
    doc = client.store.jobs.find_one({"_id": "old1"})
    assert doc["schema"] == 3 and doc["ended_at"] == datetime.fromtimestamp(t + 2.25, UTC) and doc["run_s"] == 1.25
    assert doc["params"] == {"big": str(2**64)} and doc["converted"] == ["int:params.big"]
    assert client.store.get("old1").params == {"big": 2**64}
    assert client.store.jobs.find_one({"_id": new_id})["schema"] == 3
    assert cli(mongo_settings, "mongo", "migrate", **mongo_env(mongo_settings)).stdout.startswith("rewrote 0")


def test_migrate_gives_documents_of_schema_2_their_exception_class_name(mongo_settings, caplog):
    """Schema 2 had no ``exc_name``, which the filter by exception type walks: a worker
    says so at start, and ``migrate`` adds it (nothing else of the document changes)."""
    import logging

    from runtime.client.search import JobFilter

    client = Client(mongo_settings)
    when = datetime.now(UTC)
    for i, exc in enumerate(("myapp.errors.Upstream", None)):
        client.store.jobs.insert_one({"_id": f"s2-{i}", "prefix": mongo_settings.key_prefix, "schema": 2,
                                      "path": "t.x", "status": "failed" if exc else "success", "version": 3,
                                      "changed_at": when, "exc_type": exc, "history": []})
    caplog.set_level(logging.WARNING, "runtime.mongo")
    client.store.ensure_indexes()
    assert "documents of schema 2" in caplog.text
    assert client.reader.search(JobFilter(exc_type="Upstream")).jobs == []  # not found before
    assert client.store.migrate() == 2
    docs = {d["_id"]: d for d in client.store.jobs.find({"_id": {"$in": ["s2-0", "s2-1"]}})}
    assert [(d["schema"], d["exc_name"]) for d in docs.values()] == [(3, "Upstream"), (3, None)]
    assert [j.id for j in client.reader.search(JobFilter(exc_type="Upstream")).jobs] == ["s2-0"]
    assert client.store.migrate() == 0


def test_every_documented_field_is_there_and_null_until_known(mclient):
    """Before: docs/mongodb.md said a field not known yet is null, but a queued job's
    document had no ``wait_s`` nor ``run_s``."""
    import re

    from helpers import ROOT
    table = (ROOT / "docs" / "mongodb.md").read_text().split("## The document")[1].split("### ")[0]
    documented = [f for line in table.splitlines() if line.startswith("| `")
                  for f in re.findall(r"`(\w+)`", line.split("|")[1])]
    absent_unless_set = {"expire_at", "converted", "truncated"}  # the table says when each is there
    job_id = mclient.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=600)
    doc = mclient.store.jobs.find_one({"_id": job_id})
    assert [f for f in documented if f not in doc and f not in absent_unless_set] == []
    for name in ("started_at", "ended_at", "wait_s", "run_s", "worker", "result", "exc_type", "progress"):
        assert doc[name] is None, name
