"""Filter values a person types or edits in the URL: refused with a message that names
the field and what it takes (JSON errors under /api), and the overview's slow-job links
list every slow job, whatever its status."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from dashhelpers import DASH_TASKS
from helpers import wait_until
from selenium.webdriver.common.by import By
from test_security import fetch, opener

from runtime.client import Client


def test_bad_filter_values_are_refused_with_what_they_take(dashboard: str) -> None:
    cases = {"limit=-1": "bad limit '-1': give a number of jobs, 1 to 500",
             "limit=501": "1 to 500",
             "since=-1h": "a time ago is positive",
             "since=1h&until=2h": "until (2h) is before since (1h): no job can match",
             "slower=nan": "bad run time (slower) 'nan': give seconds",
             "slower=-2": "bad run time (slower) '-2'",
             "status=bogus": "unknown status 'bogus': give one of queued,"}
    for query, message in cases.items():
        status, page = fetch(opener(), f"{dashboard}/jobs?{query}")
        assert status == 400 and message in page.replace("&#39;", "'"), (query, page)
    assert fetch(opener(), f"{dashboard}/jobs?limit=1&since=2h&until=1h")[0] == 200


def test_json_endpoints_answer_errors_in_json(dashboard: str) -> None:
    for path, code in (("/api/jobs/nosuchjob", 404), ("/api/operations/nosuch", 404), ("/api/nothing", 404)):
        status, body = fetch(opener(), dashboard + path)
        assert status == code and isinstance(json.loads(body)["error"], str), (path, body)
    assert fetch(opener(), dashboard + "/nothing")[1].lstrip().startswith("<!")  # a page stays a page


def test_slow_jobs_link_lists_the_failed_ones_too(client: Client, worker: Any, browser: Any, dashboard: str) -> None:
    slow_failed = client.queue_job("dashtasks.slow_fail", {"seconds": 1.05}, check=False)
    fast = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(task_modules=DASH_TASKS)
    assert client.get_job(slow_failed).status.value == "failed"
    browser.get(dashboard + "/")
    browser.find_element(By.ID, "slow-1").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#jobs"), 10, "the slow jobs")
    listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")]
    assert listed == [slow_failed] and fast not in listed
    assert "status" not in urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
