"""The params-text search never looks inside values the pages hide: a secret cannot be
recovered one character at a time, over Redis or MongoDB, read-only or not."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS, Dashboards
from helpers import wait_until
from mongo_fixtures import mongo_env

from runtime.client import Client
from runtime.settings import Settings

SECRET = {"user": "ann", "password": "hunter2", "session_id": "s3ss10n", "dsn": "redis://:pw9@cache/0"}


def listed(url: str, q: str) -> list[str]:
    """Ids of the jobs page for params text ``q``."""
    with urllib.request.urlopen(f"{url}/jobs?{urllib.parse.urlencode({'q': q})}", timeout=10) as r:
        return re.findall(r'<tr class="job" data-id="([^"]+)"', r.read().decode())


def check_search(url: str, job_id: str) -> None:
    assert listed(url, '"user": "ann"') == [job_id]  # what the page shows is searched
    assert listed(url, '"password": "***"') == [job_id]
    for probe in ('"password": "h', '"password":"hunter2"', "hunter", "s3ss", '"session_id": "s', "pw9"):
        assert listed(url, probe) == [], probe


def test_search_does_not_match_inside_hidden_values(client: Client, dashboards: Dashboards) -> None:
    job_id = client.queue_job("testtasks.add", SECRET, check=False)
    check_search(dashboards.start(), job_id)
    check_search(dashboards.start("--read-only"), job_id)


def test_search_over_mongodb_does_not_match_inside_hidden_values(mongo_settings: Settings, worker: Any,
                                                                 tmp_path: Path, dashboards: Dashboards) -> None:
    c = Client(mongo_settings)
    job_id = c.queue_job("testtasks.add", SECRET, check=False)
    worker.burst(**{**mongo_env(mongo_settings), "task_modules": DASH_TASKS})
    wait_until(lambda: c.store.get(job_id).status.value == "failed", 15, "the copy in MongoDB")
    check_search(dashboards.start(env={"RUNTIME_" + k.upper(): str(v) for k, v in mongo_env(mongo_settings).items()
                                       if k != "task_modules"}), job_id)
