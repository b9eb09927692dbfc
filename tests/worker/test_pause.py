"""Queue pause and resume (``runtime queues pause|resume NAME``): workers stop claiming a
paused queue's jobs within a heartbeat, the jobs stay queued, and are run once resumed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import cli, wait_until

from runtime.client import Client
from runtime.settings import Settings


def test_paused_queue_jobs_stay_queued_until_resumed(settings: Settings, client: Client, worker: Any) -> None:
    w = worker.start(queues="held,free")
    result = cli(settings, "queues", "pause", "held")
    assert result.exit_code == 0 and result.stdout.strip() == "queue held paused"
    assert cli(settings, "queues", "pause", "held").stdout.strip() == "queue held paused (it was already)"
    idle = client.broker.keys.idle("held")
    wait_until(lambda: "held" in w.paused and client.redis.zscore(idle, w.id) is None, 10,
               "the worker's heartbeat to take the pause in")
    held = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="held")
    free = client.queue_job("testtasks.add", {"a": 3, "b": 4}, queue="free")
    assert client.wait(free, timeout_s=10).status.value == "success"
    assert client.get_job(held).status.value == "queued"  # the worker claimed after it was queued
    data = json.loads(cli(settings, "queues", "--json").stdout)
    assert data["queues"]["held"] == {"ready": 1, "delayed": 0, "paused": True,
                                      "oldest_due_at": pytest.approx(client.get_job(held).due_at, abs=0.001)}
    assert "paused" in cli(settings, "queues").stdout
    assert cli(settings, "queues", "resume", "held").stdout.strip() == "queue held resumed"
    assert client.wait(held, timeout_s=10).status.value == "success"
    assert cli(settings, "queues", "resume", "held").stdout.strip() == "queue held resumed (it was not paused)"


def test_pause_refuses_bad_and_unknown_queue_names(settings: Settings, client: Client) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 2})  # "default" is known
    typo = cli(settings, "queues", "pause", "defualt")
    assert typo.exit_code == 3 and "no queue 'defualt' is known (did you mean 'default'?)" in typo.stderr
    assert "defualt" not in client.broker.registry.paused()
    for bad in ("a/b", "../x", "<script>x</script>", "q" * 101, ".."):
        r = cli(settings, "queues", "pause", bad, "--force")
        assert r.exit_code == 2 and "is not one: give letters, digits" in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert cli(settings, "queues", "pause", "later", "--force").stdout.strip() == "queue later paused"
    assert cli(settings, "queues", "resume", "later").stdout.strip() == "queue later resumed"
    nowhere = cli(settings, "queues", "resume", "nowhere")
    assert nowhere.exit_code == 3 and "it is not paused: nothing to resume" in nowhere.stderr, nowhere.stderr
    assert "--force" not in nowhere.stderr  # resume has no --force
    assert "--force to pause it anyway" in typo.stderr
    assert client.broker.registry.paused() == frozenset()
