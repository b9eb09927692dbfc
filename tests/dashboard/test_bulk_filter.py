"""A bulk action runs on exactly the filter its dry run counted: a move's destination
queue is a field of its own, never mistaken for the filter's queue."""

from __future__ import annotations

from typing import Any

from helpers import wait_until
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from runtime.client import Client

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def text(browser: Any, css: str) -> str:
    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def dry_run_filter(browser: Any) -> dict[str, str]:
    """The filter table of the dry-run page, name -> value."""
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tr")[1:]
    return {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text for r in rows}


def test_bulk_move_with_a_queue_filter_moves_exactly_the_filtered_jobs(client: Client, browser: Any,
                                                                       dashboard: str) -> None:
    client.broker.registry.pause("bulkq")
    client.broker.registry.pause("q2")
    chosen = client.queue_jobs("testtasks.add", ({"a": i, "b": 1} for i in range(300)), queue="bulkq")
    others = client.queue_jobs("testtasks.add", ({"a": i, "b": 2} for i in range(5)), queue="q2")
    browser.get(f"{dashboard}/jobs?queue=bulkq&status=queued")
    browser.find_element(By.ID, "bulk-move").click()
    wait_until(lambda: text(browser, "#dry-run").startswith("300 jobs match"), 10, "the dry run")
    counted = dry_run_filter(browser)
    assert counted == {"queue": "bulkq", "status": "queued"}
    browser.find_element(By.ID, "move-queue").send_keys("q2")
    browser.find_element(By.ID, "move-priority").send_keys("7")
    browser.find_element(By.ID, "confirm").click()
    wait_until(lambda: text(browser, "#op-state") == "done", 30, "the operation to finish")
    assert dict(kv.split("=", 1) for kv in text(browser, "#op-filter").split()) == counted  # the dry run's
    assert (text(browser, "#op-total"), text(browser, "#op-ok")) == ("300", "300")
    moved = [client.get_job(i) for i in chosen]  # their old ids end moved; each lives on under a new id in q2
    assert {(j.status.value, j.queue) for j in moved} == {("moved", "bulkq")}
    assert {(j.queue, j.priority) for j in map(client.get_job, [j.moved_to or "" for j in moved])} == {("q2", 7)}
    assert [(j.queue, j.priority) for j in map(client.get_job, others)] == [("q2", 0)] * 5
