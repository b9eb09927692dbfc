"""Who changed a job is recorded truthfully: an abort names who asked for it, and a token
holder is recorded as "token", never as a user name the client chose."""

from __future__ import annotations

import base64
import re
from typing import Any

from helpers import wait_until
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from runtime.client import Client
from runtime.settings import Settings


def text(browser: Any, css: str) -> str:
    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_abort_from_the_page_is_attributed(client: Client, worker: Any, browser: Any, dashboard: str) -> None:
    worker.start()
    job_id = client.queue_job("testtasks.sleep", {"seconds": 60})
    wait_until(lambda: client.get_job(job_id).status.value == "started", 10, "the job to start")
    browser.get(f"{dashboard}/jobs/{job_id}")
    browser.find_element(By.ID, "action-abort").click()
    wait_until(lambda: client.get_job(job_id).status.value == "abort", 10, "the abort")
    entry = client.get_job(job_id).history[-1]
    assert entry["status"] == "abort" and entry["by"] == "dashboard user anonymous from 127.0.0.1"
    browser.get(f"{dashboard}/jobs/{job_id}")
    assert "dashboard user anonymous from 127.0.0.1" in text(browser, "#history tr:last-child")


def test_abort_by_the_client_names_who_asked(client: Client, worker: Any) -> None:
    worker.start()
    job_id = client.queue_job("testtasks.sleep", {"seconds": 60})
    wait_until(lambda: client.get_job(job_id).status.value == "started", 10, "the job to start")
    client.abort(job_id, by="ops script")
    assert client.wait(job_id, timeout_s=10).history[-1]["by"] == "ops script"
    requeued = client.requeue(job_id)[0]
    wait_until(lambda: client.get_job(requeued).status.value in ("started", "success"), 10, "the rerun")
    assert "abort_by" not in client.redis.hgetall(client.broker.keys.job(job_id))


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m, page
    return m.group(1)


def test_a_token_is_recorded_as_token_whatever_user_name_is_sent(client: Client, settings: Settings,
                                                                  dashboards: Any, worker: Any) -> None:
    from test_security import fetch, opener
    token = "t" * 24
    url = dashboards.start("--token", token)
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    auth = {"Authorization": "Basic " + base64.b64encode(f"alice from 10.9.9.9 <b>x</b>:{token}".encode()).decode()}
    status, page = fetch(op, f"{url}/jobs/{job_id}", headers=auth)
    assert status == 200
    assert fetch(op, f"{url}/jobs/{job_id}/requeue", {"csrf": csrf_of(page)}, auth)[0] == 303
    assert client.get_job(job_id).history[-1]["by"] == "dashboard user token from 127.0.0.1"
