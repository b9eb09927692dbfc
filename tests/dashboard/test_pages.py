"""The overview, queues, workers and jobs pages in a real headless Chromium: counts and
queue depths that move without a reload, each queue's oldest waiting job, the workers
page's health (dead, degraded), RSS chart and running stacks, and the jobs list sorted by
its column headers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS
from helpers import wait_until
from selenium.webdriver.common.by import By
from test_browser import text

from runtime.client import Client

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_overview_counts_and_queues_move_without_a_reload(client: Client, browser: Any, dashboard: str) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="live")
    browser.get(dashboard + "/")
    browser.execute_script("window.notReloaded = true")
    row = "#queues tr.queue[data-queue='live']"
    assert text(browser, ".card[data-status='queued'] .n") == "1" and text(browser, row + " .q-ready") == "1"
    assert text(browser, row + " .q-oldest").endswith(" s")  # the oldest waiting job's age
    client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(2)], queue="live")
    client.broker.registry.pause("live")
    wait_until(lambda: text(browser, ".card[data-status='queued'] .n") == "3", 10, "the queued count to move")
    wait_until(lambda: text(browser, row + " .q-ready") == "3" and text(browser, row + " .q-state") == "paused",
               10, "the queue's row to move")
    assert browser.execute_script("return window.notReloaded") is True
    browser.get(dashboard + "/queues")  # resumed from the page: a POST with its CSRF token
    browser.find_element(By.CSS_SELECTOR, row + " button").click()
    # the POST, its redirect and the new page: slow on a loaded machine (missed 10 s once in CI)
    wait_until(lambda: text(browser, row + " .q-state") == "active", 30, "the queue to be resumed")
    assert "live" not in client.broker.registry.paused()


def test_workers_page_marks_dead_and_degraded_and_shows_running_stacks(client: Client, worker: Any, browser: Any,
                                                                      dashboard: str, tmp_path: Path) -> None:
    job_id = client.queue_job("dashtasks.gated", {"folder": str(tmp_path), "steps": 1}, check=False)
    w = worker.start(task_modules=DASH_TASKS)
    wait_until(lambda: client.get_job(job_id).status.value == "started", 10, "the job to start")
    registry, now = client.broker.registry, time.time()
    registry.write_entry("w-recycling", {"id": "w-recycling", "kind": "worker", "host": "h", "pid": "7",
                                         "state": "recycling", "recycle": "RSS over --mem-limit",
                                         "heartbeat_at": repr(now), "queues": "default", "greenlets": "1"})
    registry.write_entry("w-silent", {"id": "w-silent", "kind": "worker", "heartbeat_at": repr(now)})
    client.redis.delete(client.broker.keys.worker("w-silent"))  # its entry expired: no heartbeat
    registry.record_event({"event": "crash", "at": now, "worker": "w-crashed", "pid": 99, "reason": "exit 139"})

    def live_row() -> bool:
        browser.get(dashboard + "/workers")
        return "gated" in text(browser, "#workers tr.running pre.stack")
    wait_until(live_row, 10, "the running job's stack on the workers page")
    assert job_id in text(browser, "#workers tr.running")
    ours = browser.find_element(By.CSS_SELECTOR, f"#workers tr.worker[data-id='{w.id}']")
    assert "ok" in ours.text and ours.find_elements(By.CSS_SELECTOR, "svg.spark polyline")  # its RSS chart
    recycling = browser.find_element(By.CSS_SELECTOR, "#workers tr.worker[data-id='w-recycling']")
    assert "degraded" in recycling.get_attribute("class") and "recycling: RSS over --mem-limit" in recycling.text
    dead = {r.find_element(By.CSS_SELECTOR, "td").text: r.text for r in browser.find_elements(By.CSS_SELECTOR,
                                                                                                  "#dead tr.dead")}
    assert set(dead) == {"w-silent", "w-crashed"} and "heartbeat stopped" in dead["w-silent"]
    assert "crash: exit 139" in dead["w-crashed"]
    (tmp_path / "go-1").touch()


def test_jobs_sorted_by_duration_from_the_column_header(client: Client, worker: Any, browser: Any,
                                                        dashboard: str) -> None:
    ids = [client.queue_job("testtasks.sleep", {"seconds": s}) for s in (0.2, 0.01, 0.1)]
    worker.burst(greenlets=1)
    browser.get(dashboard + "/jobs?status=success")
    browser.find_element(By.ID, "sort-run").click()
    wait_until(lambda: "sort=run" in browser.current_url, 10, "the sorted list")
    listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")]
    assert listed == [ids[0], ids[2], ids[1]]  # longest first
    assert "status=success" in browser.current_url  # the filter kept: a shareable view
    browser.get(dashboard + "/jobs?status=success&sort=run&limit=1")  # page by page, by the cursor
    seen = []
    for _ in range(3):
        seen += [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")]
        nxt = browser.find_elements(By.ID, "next")
        if not nxt:
            break
        nxt[0].click()
    assert seen == [ids[0], ids[2], ids[1]]


def test_job_page_shows_every_attempt_with_its_worker_timing_and_error(client: Client, worker: Any, browser: Any,
                                                                       dashboard: str) -> None:
    job_id = client.queue_job("testtasks.always_fail_retried", {}, check=False)
    w = worker.start()
    wait_until(lambda: client.get_job(job_id).status.value == "maxretries", 15, "the retries to run out")
    browser.get(f"{dashboard}/jobs/{job_id}")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#attempts tr.attempt")]
    assert len(rows) == 3, rows  # the first run and two retries
    for n, row in enumerate(rows, 1):
        assert row.startswith(f"{n} {w.id}") and " ms" in row, row  # its worker, how long it took
    assert all("retry" in r for r in rows[:2]) and "maxretries" in rows[2]
    assert all("ConnectionError: down" in r for r in rows), rows  # each attempt's own error
    assert text(browser, "#traceback")  # the last attempt's whole traceback
