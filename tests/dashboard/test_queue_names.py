"""Queue names: enqueue, move and pause refuse what is not a plain name with a one-line
error; names Redis holds from before are still shown safely: a long one is cut on the
Queues page (whole in its title) and a pause button posts to its own queue."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import cli, wait_until
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from test_security import legacy_queue

from runtime.client import Client
from runtime.errors import InvalidParams
from runtime.settings import Settings

BAD = ("a/b", "../x", "<script>x</script>", "q" * 101, "..", "", "a b")


def test_enqueue_and_move_refuse_names_outside_the_charset(settings: Settings, client: Client) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="ok-name_1.x")
    for bad in BAD:
        with pytest.raises(InvalidParams, match="is not one: give letters, digits, '_', '-' and '.'"):
            client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue=bad)
        with pytest.raises(InvalidParams, match="is not one"):
            client.move(job_id, queue=bad)
    r = cli(settings, "enqueue", "testtasks.add", '{"a": 1, "b": 2}', "--queue", "a/b")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "is not one" in r.stderr


def test_long_and_odd_queue_names_on_the_queues_page(client: Client, browser: Any, dashboard: str) -> None:
    long_name, slashed = "L" * 300, "a/b"
    legacy_queue(client, long_name)
    legacy_queue(client, slashed)
    client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="plain")
    browser.get(f"{dashboard}/queues")
    width = browser.execute_script("return document.documentElement.clientWidth")
    table = browser.find_element(By.ID, "queues")
    assert table.rect["x"] + table.rect["width"] <= width + 1  # every column on screen
    for th in table.find_elements(By.TAG_NAME, "th"):
        assert th.rect["x"] + th.rect["width"] <= width + 1, th.text
    cell = browser.find_element(By.CSS_SELECTOR, f'tr.queue[data-queue="{long_name}"] td.qname')
    assert cell.get_attribute("title") == long_name and cell.rect["width"] < width / 2
    row = browser.find_element(By.CSS_SELECTOR, 'tr.queue[data-queue="a/b"]')
    assert row.find_element(By.TAG_NAME, "form").get_attribute("action").endswith("/queues/a%2Fb/pause")
    row.find_element(By.TAG_NAME, "button").click()  # refused by name, not a 404 of another path

    def refused() -> bool:  # the answer's page, once the browser has loaded it
        try:
            return "queue name 'a/b' is not one" in browser.find_element(By.TAG_NAME, "main").text
        except (NoSuchElementException, StaleElementReferenceException):
            return False
    wait_until(refused, 10, "the refusal page")
    assert client.broker.registry.paused() == frozenset()
