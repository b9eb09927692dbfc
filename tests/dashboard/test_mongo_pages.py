"""The dashboard over the MongoDB job store: its pages answer, and every query their reads
make on the job collection has a declared index to answer from (so the page times hold
on a real MongoDB at any size; tests/mongo_examples.py has the shape rule)."""

from __future__ import annotations

import html
import re
import urllib.request
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS, Dashboards
from helpers import wait_until
from mongo_examples import Recording, Shape, index_for
from mongo_fixtures import mongo_env
from starlette.requests import Request

from runtime.client import Client
from runtime.client.search import JobFilter
from runtime.dashboard import pages
from runtime.dashboard.dash import Dash
from runtime.settings import Settings
from runtime.store.mongo.documents import INDEXES

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)

_RANGE = {"$gt", "$gte", "$lt", "$lte", "$ne"}


def serving_index(shape: Shape) -> str | None:
    """The declared index that answers ``shape`` in its order, or None: its equality fields
    are the index's first keys (any order), and the sort (or a range) is the key after
    them, so the server walks the index from the first document of the page to the last,
    with no sort in memory and no scan of what the page does not show. A ``$or`` (a
    cursor's bounds on the sort key) narrows the same walk."""
    ops = {k: v for k, v in shape.filter.items() if not k.startswith("$")}
    eq = {k for k, v in ops.items() if not (isinstance(v, dict) and set(v) & (_RANGE | {"$in"}))}
    eq |= {k for k, v in ops.items() if isinstance(v, dict) and set(v) == {"$in"}}
    ranged = {k for k, v in ops.items() if isinstance(v, dict) and set(v) & _RANGE}
    if "_id" in eq:
        return "_id_"
    then = {shape.sort[0][0]} if shape.sort else ranged
    for name, (keys, _) in INDEXES.items():
        fields = [k for k, _ in keys]
        if set(fields[:len(eq)]) == eq and (not then or (len(fields) > len(eq) and {fields[len(eq)]} >= then)) \
                and ranged <= then:
            return name
    return None


def _jobs(mongo_settings: Settings, worker: Any, tmp_path: Path) -> tuple[Client, str, str]:
    c = Client(mongo_settings)
    failed = c.queue_job("dashtasks.fail_unless", {"flag": str(tmp_path / "no")}, check=False)
    ok = c.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="other")
    worker.burst(**{**mongo_env(mongo_settings), "task_modules": DASH_TASKS, "queues": "default,other"})
    wait_until(lambda: c.store.get(failed).status.value == "failed" and c.store.get(ok).status.value == "success",
               15, "the copies in MongoDB")
    return c, failed, ok


class Counting(Recording):
    """A Recording that also counts aggregations (a count of a whole index, per page)."""

    def __init__(self, collection: Any) -> None:
        super().__init__(collection)
        self.aggregations = 0

    def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.aggregations += 1
        return super().aggregate(pipeline, **kwargs)


def page(dash: Dash, fn: Any, query: str = "", **path_params: str) -> str:
    """The page ``fn`` renders for ``?query`` (as the app routes it), its body; it must answer."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": [],
             "path_params": path_params, "root_path": "", "state": {"csrf_cookie": "0" * 32, "user": "t"}}
    resp = pages.guarded(dash, fn)(Request(scope))
    assert resp.status_code == 200, (fn.__name__, query, resp.body)
    return bytes(resp.body).decode()


def test_every_query_the_pages_make_has_an_index(mongo_settings: Settings, worker: Any, tmp_path: Path) -> None:
    c, failed, ok = _jobs(mongo_settings, worker, tmp_path)
    c.queue_job("testtasks.add", {"a": 5, "b": 5}, queue="waiting")
    rec = Counting(c.store.jobs)
    c.store.jobs = rec  # type: ignore[attr-defined]
    dash = Dash(c)
    page(dash, pages.overview)
    page(dash, pages.overview_api)
    first = page(dash, pages.jobs, "limit=1")
    cursor = re.search(r'id="next" href="/jobs\?([^"]+)"', first)
    assert cursor, first
    page(dash, pages.jobs, html.unescape(cursor.group(1)))  # the next page, by the cursor
    for q in ("status=failed", "queue=other", "path=testtasks.add", "worker=w", "exc=ValueError",
              "exc=builtins.ValueError&status=failed", "exc=ValueError&queue=default", "q=flag",
              "since=1h", "until=2030-01-01", "slower=0.001", "status=queued&queue=waiting"):
        page(dash, pages.jobs, q)
    for sort in ("queued", "started", "ended", "run"):
        for q in ("", "status=success&", "status=failed&"):
            body = page(dash, pages.jobs, f"{q}sort={sort}&limit=1")
            nxt = re.search(r'id="next" href="/jobs\?([^"]+)"', body)
            if nxt:
                page(dash, pages.jobs, html.unescape(nxt.group(1)))
    for q in ("", "by=worker", "queue=default"):
        page(dash, pages.failures, q)
    # a failure group's link: its jobs by exception, task path and status
    group = re.search(r'class="group-link" href="/jobs\?([^"]+)"', page(dash, pages.failures))
    assert group, "no failure group"
    before = len(rec.shapes)
    assert failed in page(dash, pages.jobs, html.unescape(group.group(1)))
    assert [serving_index(s) for s in rec.shapes[before:]] == ["exc_path_status_changed"]
    assert "flag no is missing" in page(dash, pages.job, job_id=failed)
    page(dash, pages.job_api, job_id=failed)
    page(dash, pages.states_api, f"ids={failed},{ok}")
    page(dash, pages.queues)
    page(dash, pages.workers)
    assert rec.shapes
    unindexed = [s for s in rec.shapes if index_for(s) is None or serving_index(s) is None]
    assert not unindexed, unindexed
    assert rec.aggregations == 0  # no page counts a whole collection (the overview counts what Redis holds)


def test_pages_answer_over_mongodb(mongo_settings: Settings, worker: Any, tmp_path: Path,
                                   dashboards: Dashboards) -> None:
    _, failed, ok = _jobs(mongo_settings, worker, tmp_path)
    url = dashboards.start(env={"RUNTIME_" + k.upper(): str(v) for k, v in mongo_env(mongo_settings).items()
                                if k != "task_modules"})
    for page, expect in (("/jobs", failed), ("/jobs?queue=other", ok), ("/failures", failed),
                         (f"/jobs/{failed}", "flag no is missing"), ("/", "failed"), ("/queues", "other")):
        with urllib.request.urlopen(url + page, timeout=10) as resp:
            assert expect in resp.read().decode(), page



def test_a_filter_by_exception_type_reads_only_the_jobs_of_that_class_name(mongo_settings: Settings, worker: Any,
                                                                          tmp_path: Path) -> None:
    c, failed, ok = _jobs(mongo_settings, worker, tmp_path)
    rec = Recording(c.store.jobs)
    c.store.jobs = rec  # type: ignore[attr-defined]
    for exc in ("ValueError", "builtins.ValueError"):
        found = c.reader.search(JobFilter(exc_type=exc))
        # one document read (the failed job's), from the exc_changed index: not a walk of every job
        assert [j.id for j in found.jobs] == [failed] and found.scanned == 1
        assert rec.shapes[-1].filter.get("exc_name") == "ValueError" and serving_index(rec.shapes[-1]) == "exc_changed"
    assert c.store.jobs.find_one({"_id": ok})["exc_name"] is None
