"""Small things a browser shows: no 404 for the icon, no raw control bytes in a page,
and the same rounded progress from the server as from the live update."""

from __future__ import annotations

import urllib.request
from typing import Any

from dashhelpers import DASH_TASKS
from selenium.webdriver.common.by import By

from runtime.client import Client


def test_favicon_is_answered_without_a_page(dashboard: str) -> None:
    with urllib.request.urlopen(dashboard + "/favicon.ico", timeout=10) as r:
        assert r.status == 204 and r.read() == b""


def test_control_characters_are_escaped_in_pages(client: Client, worker: Any, dashboard: str) -> None:
    job_id = client.queue_job("dashtasks.hostile", {"text": "bell\x07 esc\x1b[31mred"}, check=False)
    worker.burst(task_modules=DASH_TASKS)
    for path in (f"/jobs/{job_id}", "/jobs", "/failures", f"/api/jobs/{job_id}"):
        with urllib.request.urlopen(dashboard + path, timeout=10) as r:
            body = r.read()
        assert b"\x1b" not in body and b"\x07" not in body, path
    with urllib.request.urlopen(f"{dashboard}/jobs/{job_id}", timeout=10) as r:
        assert "esc\\x1b[31mred" in r.read().decode()


def test_progress_is_rounded_as_the_live_update_rounds_it(client: Client, browser: Any, dashboard: str) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    client.cancel(job_id)  # final: the page is not polled, what it shows is the server's
    client.redis.hset(client.broker.keys.job(job_id), "progress", "0.125")
    browser.get(f"{dashboard}/jobs/{job_id}")
    live = browser.execute_script("return Math.round(0.125 * 100) + '%'")
    assert browser.find_element(By.ID, "progress-pct").text == live == "13%"
