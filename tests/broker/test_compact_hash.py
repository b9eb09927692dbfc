"""A job document stays a compact hash on a Redis with stock settings (its history and
report in short fields: runtime/hashfields.py), and documents written before that layout
are still read and run."""

from __future__ import annotations

import json

import redis

from runtime.hashfields import decode_entry, encode_entry, history_length, read_history

ON_CLUSTER_TOO = True


def _encoding(client, job_id: str) -> str:
    return str(client.redis.object("encoding", client.broker.keys.job(job_id)))


def test_a_finished_job_stays_a_compact_hash_on_stock_settings(client, worker, settings, monkeypatch):
    nodes = client.redis.get_nodes() if hasattr(client.redis, "get_nodes") else [None]
    limits = {str(v) for n in nodes
              for v in client.redis.config_get("hash-max-*-value", **({"target_nodes": n} if n else {})).values()}
    assert limits == {"64"}  # the suite's servers run Redis's defaults
    monkeypatch.setenv("RUNTIME_HOSTNAME", "host-of-twelve")  # worker ids as short as most hosts'
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(20)])
    assert {_encoding(client, i) for i in ids} <= {"listpack", "ziplist"}
    worker.burst(greenlets=4)
    jobs = client.store.get_many(ids)
    assert [j.result for j in jobs] == [i + 1 for i in range(20)]
    assert {_encoding(client, i) for i in ids} <= {"listpack", "ziplist"}
    job = jobs[0]
    assert [e["status"] for e in job.history] == ["queued", "claimed", "started", "success"]
    assert job.history[1]["worker"].startswith("host-of-twelve.") and job.history[1]["attempt"] == 1
    assert set(job.report) >= {"timing", "memory"} and job.report["timing"]["wall_s"] >= 0
    assert job.report["memory"]["rss_after"] == job.report["memory"]["rss_before"] + job.report["memory"]["rss_delta"]
    assert client.redis.memory_usage(client.broker.keys.job(job.id)) < 1000


def test_a_document_of_the_layout_before_is_read_and_run(client, worker, settings):
    job_id = client.queue_job("testtasks.add", {"a": 2, "b": 3})
    key = client.broker.keys.job(job_id)
    first = client.redis.hget(key, "h1")
    old = json.dumps({**decode_entry(json.loads(first)), "note": "from before"}, separators=(",", ":"))
    client.redis.hset(key, "history", old + ',{"at":1.5,"status":"queued","note":"again"}')
    client.redis.hdel(key, "hn", "h1")
    worker.burst()
    job = client.get_job(job_id)
    assert job.result == 5 and not job.unreadable
    assert [(e["status"], e.get("note")) for e in job.history] == [
        ("queued", "from before"), ("queued", "again"), ("claimed", None), ("started", None), ("success", None)]
    raw = redis.Redis.from_url(settings.redis_url, decode_responses=True) if "cluster" not in settings.redis_url \
        else client.redis
    assert history_length(raw.hgetall(key)) == 5


def test_history_entries_round_trip():
    for entry in ({"at": 1.25, "status": "queued"}, {"at": 2.5, "status": "claimed", "worker": "w.1.ab", "attempt": 3},
                  {"at": 3.0, "status": "failed", "attempt": 1, "note": "worker-lost", "by": "ops"},
                  {"at": None, "status": "...", "note": "history entry not kept"}):
        text = encode_entry(entry)
        assert decode_entry(json.loads(text)) == entry
    assert encode_entry({"at": 1.25, "status": "queued"}) == '[1.25,"queued"]'
    entries, bad = read_history({"hn": "3", "h1": '[1.0,"queued"]', "h2": "not json", "h3": '[2.0,"claimed","w",1]'})
    assert [e["status"] for e in entries] == ["queued", "claimed"] and bad == "not json"


def _long_history(client, job_id: str, n: int) -> None:
    """Give job ``job_id`` n history entries (its first, then n - 1 made up), as thousands of
    retries would."""
    key = client.broker.keys.job(job_id)
    fields = {f"h{i}": f'[{i}.5,"retry",null,{i}]' for i in range(2, n + 1)}
    pipe = client.redis.pipeline(transaction=False)
    for i in range(0, n, 1000):
        pipe.hset(key, mapping=dict(list(fields.items())[i:i + 1000]) or {"hn": "1"})
    pipe.hset(key, "hn", str(n))
    pipe.execute()


def test_a_job_with_thousands_of_history_entries_is_recorded_compact_and_moved(client, worker):
    compact = client.queue_job("testtasks.add_compact", {"a": 1, "b": 2})
    moved = client.queue_job("testtasks.add", {"a": 2, "b": 2}, delay=3600)
    _long_history(client, compact, 9000)
    _long_history(client, moved, 5000)
    [new] = client.move(moved, queue="other")
    copy = client.get_job(new)
    assert len(copy.history) == 5001 and copy.history[-1]["from"] == moved and not copy.unreadable  # + its landing
    worker.burst()
    job = client.get_job(compact)
    assert job.status == "success" and job.result == 3 and job.history == []
    assert not any(k.startswith("h") for k in client.redis.hkeys(client.broker.keys.job(compact)))


def test_a_corrupt_history_count_is_shown_and_a_new_entry_keeps_the_others(client, worker):
    key_of = client.broker.keys.job
    cases = {"huge": "99999999999", "not ascii": "\u00b2", "negative": "-3", "deleted": None}
    ids = dict(zip(cases, client.queue_jobs("testtasks.add", [{"a": 1, "b": 1}] * len(cases))))
    for case, value in cases.items():
        client.redis.hset(key_of(ids[case]), "h2", '[2.5,"queued",null,null,{"note":"kept"}]')
        if value is None:
            client.redis.hdel(key_of(ids[case]), "hn")
        else:
            client.redis.hset(key_of(ids[case]), "hn", value)
    for case, job_id in ids.items():  # read at once, whatever the count says
        job = client.get_job(job_id)
        assert [e["status"] for e in job.history] == ["queued", "queued"] and "history" in job.unreadable, case
    worker.burst()
    for case, job_id in ids.items():
        job = client.get_job(job_id)
        assert job.status == "success" and job.result == 2, case
        statuses = [e["status"] for e in job.history]
        assert statuses[:2] == ["queued", "queued"] and statuses[-3:] == ["claimed", "started", "success"], (case, statuses)


def test_a_later_attempt_shows_its_own_report_logs_and_artifacts_only(client, worker):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1})
    # as an earlier attempt left them: a report section besides timing and memory, logs, a profile
    client.redis.hset(client.broker.keys.job(job_id), mapping={
        "attempt": "1", "report": '{"profile":{"x":1}}', "logs": '[[1.0,"INFO","attempt 1"]]',
        "artifacts": '{"profile":"attempt 1"}'})
    worker.burst()
    job = client.get_job(job_id)
    assert job.attempt == 2 and job.result == 2 and "profile" not in job.report and "timing" in job.report
    assert job.logs == [] and job.artifacts == {}


def test_a_history_entry_keeps_its_members_in_order():
    assert list(decode_entry(json.loads('[1.0,"failed","w",1,{"note":"n","error":"E: x"}]'))) == [
        "at", "status", "worker", "attempt", "note", "error"]


def test_a_job_with_a_stray_entry_field_is_moved_and_lands(client):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=3600)
    client.redis.hset(client.broker.keys.job(job_id), "h50", '[1.5,"queued",null,null,{"note":"by hand"}]')
    [new] = client.move(job_id, queue="other")
    copy = client.get_job(new)
    assert copy.status == "queued" and copy.moved_from == job_id and copy.due_at > copy.queued_at + 3000
    assert client.get_job(job_id).status == "moved"
