"""The dashboard over the MongoDB job store: its pages answer, and every query their reads
make on the job collection has a declared index to answer from (so the page times hold
on a real MongoDB at any size; tests/mongo_examples.py has the shape rule)."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS, Dashboards
from helpers import wait_until
from mongo_examples import Recording, index_for
from mongo_fixtures import mongo_env

from runtime.client import Client
from runtime.client.search import JobFilter
from runtime.settings import Settings


def _jobs(mongo_settings: Settings, worker: Any, tmp_path: Path) -> tuple[Client, str, str]:
    c = Client(mongo_settings)
    failed = c.queue_job("dashtasks.fail_unless", {"flag": str(tmp_path / "no")}, check=False)
    ok = c.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="other")
    worker.burst(**{**mongo_env(mongo_settings), "task_modules": DASH_TASKS, "queues": "default,other"})
    wait_until(lambda: c.store.get(failed).status.value == "failed" and c.store.get(ok).status.value == "success",
               15, "the copies in MongoDB")
    return c, failed, ok


def test_every_query_of_the_pages_reads_has_an_index(mongo_settings: Settings, worker: Any, tmp_path: Path) -> None:
    c, failed, ok = _jobs(mongo_settings, worker, tmp_path)
    rec = Recording(c.store.jobs)
    c.store.jobs = rec  # type: ignore[attr-defined]
    r = c.reader
    first = r.search(JobFilter(), limit=1)
    assert first.next
    r.search(JobFilter(), limit=1, before=first.next)
    for f in (JobFilter(status="failed"), JobFilter(queue="other"), JobFilter(path="testtasks.add"),
              JobFilter(worker="w"), JobFilter(exc_type="ValueError"), JobFilter(text="flag"),
              JobFilter(since=0.0), JobFilter(until=2e9)):
        r.search(f, limit=5)
    for sort in ("queued", "started", "ended", "run"):  # the jobs list sorted, alone and after a status
        for f in (JobFilter(), JobFilter(status="success")):
            page = r.search(f, limit=1, sort=sort)
            assert page.window is None, (sort, f)  # an index's order, not a window's
            if page.next:
                r.search(f, limit=1, sort=sort, before=page.next)
    assert [g.count for g in r.failures()[0]] == [1]
    r.failures(queue="default")
    r.job(failed)
    assert rec.shapes
    unindexed = [s for s in rec.shapes if index_for(s) is None]
    assert not unindexed, unindexed


def test_pages_answer_over_mongodb(mongo_settings: Settings, worker: Any, tmp_path: Path,
                                   dashboards: Dashboards) -> None:
    _, failed, ok = _jobs(mongo_settings, worker, tmp_path)
    url = dashboards.start(env={"RUNTIME_" + k.upper(): str(v) for k, v in mongo_env(mongo_settings).items()
                                if k != "task_modules"})
    for page, expect in (("/jobs", failed), ("/jobs?queue=other", ok), ("/failures", failed),
                         (f"/jobs/{failed}", "flag no is missing"), ("/", "failed"), ("/queues", "other")):
        with urllib.request.urlopen(url + page, timeout=10) as resp:
            assert expect in resp.read().decode(), page

