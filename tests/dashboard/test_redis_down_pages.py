"""Redis out of reach while the dashboard runs: every page, API route and action answers
503 "Redis unavailable" (never a bare 500), and an open page says its live figures are
stale until a poll succeeds again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dashhelpers import Dashboards
from helpers import wait_until
from selenium.webdriver.common.by import By
from tcp_proxy import TcpProxy
from test_security import csrf_of, fetch, opener

from runtime.client import Client
from runtime.settings import Settings


@pytest.fixture
def proxy(settings: Settings) -> Iterator[TcpProxy]:
    """A TCP way to the test's Redis (a unix socket, or host:port), which a test cuts."""
    target = urlparse(settings.redis_url)
    p = TcpProxy(target.path if target.scheme == "unix" else (target.hostname or "127.0.0.1", target.port or 6379))
    yield p
    p.down()


@pytest.fixture
def cut_dashboard(settings: Settings, proxy: TcpProxy, tmp_path: Path) -> Iterator[str]:
    """A dashboard reaching Redis through ``proxy``."""
    d = Dashboards(settings.replace(redis_url=f"redis://127.0.0.1:{proxy.port}/0"), tmp_path)
    yield d.start()
    d.stop_all()


def test_every_route_answers_503_while_redis_is_down(client: Client, worker: Any, proxy: TcpProxy,
                                                     cut_dashboard: str) -> None:
    url = cut_dashboard
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    page = fetch(op, f"{url}/jobs/{job_id}")[1]
    token = csrf_of(page)
    assert fetch(op, f"{url}/operations")[0] == 200
    proxy.down()
    gets = ["/", "/jobs", "/jobs?status=failed", f"/jobs/{job_id}", f"/jobs/{job_id}/artifacts/profile",
            "/failures", "/queues", "/workers", "/operations", "/operations/abc123", "/bulk?action=cancel&queue=q"]
    apis = [f"/api/jobs/{job_id}", f"/api/states?ids={job_id}", "/api/overview", "/api/operations/abc123"]
    for path in gets + apis:
        status, body = fetch(op, url + path)
        assert status == 503 and "Redis unavailable" in body, (path, status, body[body.find("<main>"):][:3000])
    posts = [(f"/jobs/{job_id}/requeue", {}), (f"/jobs/{job_id}/move", {"to_queue": "elsewhere"}),
             ("/queues/default/pause", {}), ("/bulk", {"action": "cancel", "filter": '{"queue": "default"}'})]
    for path, form in posts:
        status, body = fetch(op, url + path, {"csrf": token, **form})
        assert status == 503 and "Redis unavailable" in body, (path, status, body[:300])
    proxy.up()
    wait_until(lambda: fetch(op, url + "/operations")[0] == 200, 15, "the dashboard to reach Redis again")


def test_a_live_page_says_its_figures_are_stale_while_polls_fail(client: Client, browser: Any, proxy: TcpProxy,
                                                                 cut_dashboard: str) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 2})
    browser.get(cut_dashboard + "/")
    banner = browser.find_element(By.ID, "stale")
    assert not banner.is_displayed()
    browser.execute_script("window.notReloaded = true")
    proxy.down()
    t = time.monotonic()
    wait_until(lambda: banner.is_displayed(), 15, "the stale banner")
    assert time.monotonic() - t < 10
    assert "Live updates failed" in banner.text and "Redis unavailable" in banner.text, banner.text
    proxy.up()
    wait_until(lambda: not banner.is_displayed(), 20, "the banner to clear once a poll succeeds")
    assert browser.execute_script("return window.notReloaded") is True  # the same page, live again
