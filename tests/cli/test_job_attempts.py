"""`runtime job` after a worker was lost and the job ran again: each attempt's worker,
times and error on its own line, and the fields of the latest attempt said to be its."""

from __future__ import annotations

import json
import time

from helpers import cli

from runtime.messages import Outcome
from runtime.status import Status

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def _job_text(settings, job_id: str) -> list[str]:
    r = cli(settings, "job", job_id)
    assert r.exit_code == 0, r.stderr
    return r.stdout.splitlines()


def test_runtime_job_shows_each_attempt_apart_after_a_lost_worker(settings, client, worker):
    job_id = client.queue_job("testtasks.always_fail_retried", {})
    client.broker.claim("w-dead", 1, ["default"])
    client.broker.reap(dead_workers=["w-dead"])  # its worker died running it: requeued
    lines = _job_text(settings, job_id)
    assert "  worker    w-dead" in lines  # one attempt: its own worker, without a label
    w = worker.burst()  # attempts 2..4 on this worker, each failing
    lines = _job_text(settings, job_id)
    assert f"  worker    {w.id} (attempt 4, the latest)" in lines, lines
    assert any(x.startswith("  error     ConnectionError: down (attempt 4)") for x in lines), lines
    block = lines[lines.index("  attempts") + 1:lines.index("  history")]
    assert [x.split()[0] for x in block] == ["#1", "#2", "#3", "#4"], block
    assert block[0].split()[1] == "w-dead" and "note worker lost, requeued" in block[0], block
    assert all(x.split()[1] == w.id and "error ConnectionError: down" in x for x in block[1:]), block
    assert " retry " in block[1] and " maxretries " in block[3], block


def test_a_running_attempt_is_not_shown_with_the_end_or_error_of_an_earlier_one(settings, client):
    """Attempt 1 on w-a ended retry (its error and report stay in the document, as a
    worker writes them); attempt 2 now runs on w-b."""
    job_id = client.queue_job("testtasks.always_fail_retried", {})
    client.broker.claim("w-a", 1, ["default"])
    fields = {"started_at": repr(time.time()), "exc_type": "ConnectionError", "exc_message": "down",
              "report": json.dumps({"timing": {"wall_s": 0.001}}), "ended_at": repr(time.time())}
    client.broker.finish([Outcome(job_id, "default", 1, Status.RETRY, 0.0, "retry 1/2", fields,
                                  ',"error":"ConnectionError: down"')], "w-a")
    client.broker.claim("w-b", 1, ["default"])
    lines = _job_text(settings, job_id)
    assert "  worker    w-b (attempt 2, the latest)" in lines, lines
    started = next(x for x in lines if x.startswith("  started "))
    assert started.endswith("ended - (running)"), started
    assert any(x.startswith("  wait ") and x.split("run ")[1].startswith("-") for x in lines), lines
    assert "  error     ConnectionError: down (attempt 1)" in lines, lines
    assert any(x.startswith("  note      attempt 2 runs: the report") for x in lines), lines
    block = lines[lines.index("  attempts") + 1:lines.index("  history")]
    assert [x.split()[:2] for x in block] == [["#1", "w-a"], ["#2", "w-b"]], block
    assert " retry " in block[0] and "error ConnectionError: down" in block[0] and block[1].endswith("running  for -")
