"""The dashboard in a real headless Chromium, with a live worker: a failure found in its
group, requeued from the page, succeeds; a running job's progress and log tail move; a
profiled job shows its profile; a bulk cancel by filter touches exactly the filtered jobs.
The README's screenshots come from here (RUNTIME_SCREENSHOTS=DIR saves them)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import testtasks
from dashhelpers import DASH_TASKS
from helpers import wait_until
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from runtime.client import Client


def text(browser: Any, css: str) -> str:
    """The text of the element at ``css``; "" while the page it is on is being replaced."""
    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def screenshot(browser: Any, name: str) -> None:
    folder = os.environ.get("RUNTIME_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / name))


def test_failure_group_requeued_from_the_page_succeeds(client: Client, worker: Any, browser: Any,
                                                       dashboard: str, tmp_path: Path) -> None:
    flag = tmp_path / "fixed.flag"
    job_id = client.queue_job("dashtasks.fail_unless", {"flag": str(flag), "api_token": "s3cret-value"}, check=False)
    client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst(task_modules=DASH_TASKS)
    assert client.get_job(job_id).status.value == "failed"

    browser.get(dashboard + "/failures")
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "tr.group") if "dashtasks.fail_unless" in r.text]
    assert len(rows) == 1 and "ValueError" in rows[0].text, browser.page_source
    rows[0].find_element(By.CSS_SELECTOR, "a.group-link").click()  # the group's jobs, filtered
    wait_until(lambda: "exc=ValueError" in browser.current_url and text(browser, "#jobs"), 10, "the group's jobs")
    listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")]
    assert listed == [job_id]
    screenshot(browser, "dashboard-jobs.png")
    browser.find_element(By.LINK_TEXT, job_id).click()
    wait_until(lambda: "flag fixed.flag is missing" in text(browser, "#error"), 10, "the job's page")
    assert "s3cret-value" not in browser.page_source and '"api_token": "***"' in text(browser, "#params")

    flag.write_text("ok")
    browser.find_element(By.ID, "action-requeue").click()
    wait_until(lambda: text(browser, "h1 .status") == "queued", 10, "the job page after requeue")
    history = client.get_job(job_id).history[-1]
    assert history["status"] == "queued" and history["by"] == "dashboard user anonymous from 127.0.0.1"
    worker.burst(task_modules=DASH_TASKS)
    browser.refresh()
    assert text(browser, "h1 .status") == "success" and text(browser, "#result") == '"fixed"'
    screenshot(browser, "dashboard-job.png")


def test_running_job_progress_and_log_tail_move(client: Client, worker: Any, browser: Any, dashboard: str,
                                                tmp_path: Path) -> None:
    job_id = client.queue_job("dashtasks.gated", {"folder": str(tmp_path), "steps": 3}, check=False)
    worker.start(task_modules=DASH_TASKS, progress_interval_s=0.0)
    wait_until(lambda: client.get_job(job_id).status.value == "started", 10, "the job to start")
    browser.get(f"{dashboard}/jobs")  # the list: its running row's progress moves in place
    browser.execute_script("window.notReloaded = true")
    row = f"#jobs tr[data-id='{job_id}']"
    assert text(browser, row + " td.pg") == "-" and text(browser, row + " td.st") == "started"
    (tmp_path / "go-1").touch()
    wait_until(lambda: text(browser, row + " td.pg") == "33%", 10, "the list's progress cell to move")
    assert browser.execute_script("return window.notReloaded") is True
    browser.get(f"{dashboard}/jobs/{job_id}")
    browser.execute_script("window.notReloaded = true")
    assert text(browser, "#progress-pct") == "33%"
    assert text(browser, "#progress-message") == "step 1 of 3"
    assert browser.execute_script("return window.notReloaded") is True  # moved in place, live
    wait_until(lambda: "finished step 1 of 3" in text(browser, "#logs"), 10, "the log tail to move")
    # its current stack, as its worker's heartbeat reports it: the task's own frame, waiting for go-2
    wait_until(lambda: "in gated" in text(browser, "#stack"), 10, "the running job's stack")
    (tmp_path / "go-2").touch()
    wait_until(lambda: "finished step 2 of 3" in text(browser, "#logs"), 10, "the log tail to move again")
    assert text(browser, "#progress-pct") == "67%"
    (tmp_path / "go-3").touch()
    wait_until(lambda: text(browser, "h1 .status") == "success", 15, "the page to show the job ended")


def test_profiled_slow_job_hot_line_two_clicks_from_the_overview(client: Client, worker: Any, browser: Any,
                                                                 dashboard: str) -> None:
    fast = client.queue_job("testtasks.profiled_sleep", {"seconds": 0.01})
    slow = client.queue_job("testtasks.profiled_sleep", {"seconds": 1.05})
    worker.burst()
    browser.get(dashboard + "/")
    browser.find_element(By.ID, "slow-1").click()  # 1: the jobs that ran 1 s or more
    wait_until(lambda: text(browser, "#jobs"), 10, "the slow jobs")
    listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")]
    assert listed == [slow] and fast not in listed
    browser.find_element(By.LINK_TEXT, slow).click()  # 2: its page, the profile in it
    frame = wait_until(lambda: browser.find_elements(By.ID, "profile"), 10, "the job's page")[0]
    browser.switch_to.frame(frame)
    try:  # the hot line: the task's own frame at its file and line, 1.05 s of the run, and what it waited in
        wait_until(lambda: "profiled_sleep" in browser.find_element(By.TAG_NAME, "body").text, 15,
                   "the profile to render in its frame")
        body = browser.find_element(By.TAG_NAME, "body").text
        line = testtasks.profiled_sleep.__code__.co_firstlineno  # pyinstrument names a frame by it
        hot = re.search(rf"([\d.]+)\nprofiled_sleep\ntesttasks\.py:{line}\n([\d.]+)\nsleep\n", body)
        assert hot and float(hot.group(1)) >= 1.0 and float(hot.group(2)) >= 1.0, body
    finally:
        browser.switch_to.default_content()


def test_bulk_cancel_by_filter_touches_exactly_the_filtered_jobs(client: Client, browser: Any,
                                                                 dashboard: str) -> None:
    chosen = [client.queue_job("testtasks.add", {"a": i, "b": 1}, queue="bulk", check=False) for i in range(5)]
    other_params = [client.queue_job("testtasks.add", {"a": 1000 + i, "b": 2}, queue="bulk", check=False)
                    for i in range(3)]
    other_queue = [client.queue_job("testtasks.add", {"a": i, "b": 1}, queue="elsewhere", check=False)
                   for i in range(2)]
    browser.get(f'{dashboard}/jobs?queue=bulk&q="b":1')
    assert sorted(a.text for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job td:first-child a")) \
        == sorted(chosen)
    browser.find_element(By.ID, "bulk-cancel").click()
    wait_until(lambda: text(browser, "#dry-run"), 10, "the dry run page")
    assert text(browser, "#dry-run").startswith("5 jobs match this filter now")
    assert all(client.get_job(i).status.value == "queued" for i in chosen)  # a dry run changes nothing
    browser.find_element(By.ID, "confirm").click()
    wait_until(lambda: "/operations/" in browser.current_url, 10, "the operation's page")
    wait_until(lambda: text(browser, "#op-state") == "done", 15, "the operation to finish")
    assert (text(browser, "#op-total"), text(browser, "#op-ok"), text(browser, "#op-skipped")) == ("5", "5", "0")
    assert [client.get_job(i).status.value for i in chosen] == ["cancel"] * 5
    assert [client.get_job(i).status.value for i in other_params + other_queue] == ["queued"] * 5
    assert client.get_job(chosen[0]).history[-1]["by"] == "dashboard user anonymous from 127.0.0.1"


def test_move_a_waiting_job_from_its_page_then_by_filter(client: Client, browser: Any, dashboard: str) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="parked")
    others = [client.queue_job("testtasks.add", {"a": i, "b": 3}, queue="parked") for i in range(3)]
    client.queue_job("testtasks.add", {"a": 0, "b": 0}, queue="urgent")  # a known queue: a move's target
    browser.get(f"{dashboard}/jobs/{job_id}")
    browser.find_element(By.ID, "move-queue").send_keys("urgent")
    browser.find_element(By.ID, "move-priority").send_keys("7")
    browser.find_element(By.ID, "action-move").click()
    wait_until(lambda: "urgent (priority 7)" in text(browser, ".grid"), 10, "the moved job's page (its new id's)")
    assert browser.find_element(By.ID, "moved-from").text == job_id
    assert "moved from parked (priority 0) to urgent (priority 7)" in text(browser, "#history")
    browser.get(f'{dashboard}/jobs?queue=parked&q="b":3')
    browser.find_element(By.ID, "bulk-move").click()
    wait_until(lambda: text(browser, "#dry-run").startswith("3 jobs match"), 10, "the dry run")
    browser.find_element(By.ID, "move-priority").send_keys("-5")
    browser.find_element(By.ID, "confirm").click()
    wait_until(lambda: text(browser, "#op-state") == "done", 15, "the operation to finish")
    assert [(j.queue, j.priority) for j in map(client.get_job, others)] == [("parked", -5)] * 3
    moved = client.get_job(job_id)  # its old id ends moved; it lives on under a new id in urgent
    assert (moved.status.value, moved.queue) == ("moved", "parked") and moved.moved_to
    assert (client.get_job(moved.moved_to).queue, client.get_job(moved.moved_to).priority) == ("urgent", 7)
