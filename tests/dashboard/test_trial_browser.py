"""What a fresh user's trial found, checked in the browser: a running job's log tail
follows new lines while the reader is at its bottom (and stays put when scrolled up);
an operation's end time appears without a reload; a very long task path is cut in the
jobs table (whole in its title and on the job's page), keeping the table on screen."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dashhelpers import DASH_TASKS
from helpers import wait_until
from selenium.webdriver.common.by import By
from test_browser import text

from runtime.client import Client


def at_bottom(browser: Any) -> bool:
    return bool(browser.execute_script(
        "var l = document.getElementById('logs'); return l.scrollHeight - l.scrollTop - l.clientHeight < 8"))


def test_log_tail_follows_new_lines_while_at_the_bottom(client: Client, worker: Any, browser: Any, dashboard: str,
                                                        tmp_path: Path) -> None:
    job_id = client.queue_job("dashtasks.gated", {"folder": str(tmp_path), "steps": 4, "lines": 80}, check=False)
    worker.start(task_modules=DASH_TASKS, progress_interval_s=0.0)
    (tmp_path / "go-1").touch()
    wait_until(lambda: "finished step 1" in "\n".join(map(str, client.reader.live_job(job_id).logs)), 10, "step 1's lines")
    browser.get(f"{dashboard}/jobs/{job_id}")
    assert browser.execute_script("var l = document.getElementById('logs'); return l.scrollHeight > l.clientHeight")
    assert at_bottom(browser)  # a live tail opens at its newest line
    (tmp_path / "go-2").touch()
    wait_until(lambda: "finished step 2 of 4" in text(browser, "#logs"), 10, "step 2's lines")
    assert at_bottom(browser), "the tail did not follow the new lines"
    browser.execute_script("document.getElementById('logs').scrollTop = 0")  # the reader scrolls up
    (tmp_path / "go-3").touch()
    wait_until(lambda: "finished step 3 of 4" in text(browser, "#logs"), 10, "step 3's lines")
    assert browser.execute_script("return document.getElementById('logs').scrollTop") == 0
    (tmp_path / "go-4").touch()


def test_operation_end_time_appears_without_a_reload(client: Client, browser: Any, dashboard: str) -> None:
    keys = client.broker.keys
    op_id = "0" * 23 + "1"
    client.redis.hset(keys.operation(op_id), mapping={
        "id": op_id, "action": "cancel", "filter": '{"queue": "q"}', "by": "a test", "target": "{}",
        "state": "running", "total": 10, "done": 4, "ok": 4, "skipped": 0, "started_at": time.time(),
        "beat_at": time.time()})
    browser.get(f"{dashboard}/operations/{op_id}")
    browser.execute_script("window.notReloaded = true")
    assert text(browser, "#op-state") == "running" and text(browser, "#op-ended") == "-"
    client.redis.hset(keys.operation(op_id), mapping={"state": "done", "done": 10, "ok": 10,
                                                      "ended_at": time.time()})
    wait_until(lambda: text(browser, "#op-state") == "done", 10, "the operation's state")
    wait_until(lambda: text(browser, "#op-ended") != "-", 5, "its end time")
    assert text(browser, "#op-ended").startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    assert browser.execute_script("return window.notReloaded") is True


def test_a_very_long_task_path_is_cut_in_the_table(client: Client, browser: Any, dashboard: str) -> None:
    path = "pkg." + "m" * 3000 + ".task"
    job_id = client.queue_job(path, {}, check=False)
    browser.get(f"{dashboard}/jobs")
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    cell = browser.find_element(By.CSS_SELECTOR, f"#jobs tr[data-id='{job_id}'] div.path")
    assert cell.get_attribute("title") == path and cell.rect["width"] < width / 2
    assert browser.find_element(By.CSS_SELECTOR, f"#jobs tr[data-id='{job_id}'] td:last-child").is_displayed()
    browser.get(f"{dashboard}/jobs/{job_id}")
    assert text(browser, "#path") == path
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
