"""The registry of live workers: what ``runtime workers`` reads."""

from __future__ import annotations

import json
import os

from helpers import wait_until


def _entry_with_running_job(client):
    for e in client.broker.registry.entries():
        if json.loads(e["running"]):
            return e
    return None


def test_worker_registry_shows_running_jobs_with_stacks(client, worker):
    w = worker.start(greenlets=3)
    job_id = client.queue_job("testtasks.sleep", {"seconds": 30})
    e = wait_until(lambda: _entry_with_running_job(client), 10, "registry entry with a running job")
    assert e["id"] == w.id and int(e["pid"]) == os.getpid() and e["queues"] == "default"
    assert int(e["rss_bytes"]) > 10_000_000 and e["state"] == "running"
    running = json.loads(e["running"])
    assert running[0]["id"] == job_id and any("sleep" in frame for frame in running[0]["stack"])
    [shown] = client.reader.workers()
    assert shown["running"][0]["id"] == job_id and shown["greenlets"] == 3 and shown["queues"] == ["default"]


def test_the_entry_of_a_killed_worker_expires(client, workers):
    proc = workers.start("--greenlets", "3", worker_ttl_s=0.5)
    client.queue_job("testtasks.sleep", {"seconds": 30})
    e = wait_until(lambda: _entry_with_running_job(client), 10, "registry entry with a running job")
    assert int(e["pid"]) == proc.pid
    proc.kill()
    proc.wait()
    wait_until(lambda: not client.redis.exists(client.broker.keys.worker(e["id"])), 5, "entry to expire")
