"""A sort the Redis store has no index of (duration; start of ended jobs...) orders only
the newest jobs by change: the page says so plainly above the table, its links carry
``window=N``, and a smaller window is honoured; indexed sorts say nothing of the kind."""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from runtime.client import Client
from runtime.client.search import JobFilter


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_a_sort_without_an_index_says_it_orders_the_newest_jobs_only(client: Client, worker: Any,
                                                                       dashboard: str) -> None:
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": s} for s in (0.05, 0.01, 0.03, 0.02)])
    worker.burst(greenlets=1)  # one at a time: they end (change) in queue order
    body = _get(dashboard + "/jobs?sort=run&limit=2")
    note = re.search(r'<p class="note" id="window-note">(.*?)</p>', body, re.S)
    assert note, body
    text = " ".join(re.sub(r"<[^>]+>", "", note.group(1)).split())
    assert text.startswith("Sorted by duration among the newest 1,000 jobs by last change only, not among all jobs")
    assert "(4 of them kept by this filter and sorted: those with a duration)" in text and "window=1000" in text
    nxt = re.search(r'id="next" href="/jobs\?([^"]+)"', body)
    assert nxt and "window=1000" in html.unescape(nxt.group(1))  # the next page says it as well
    # the newest 2 by change are the last two run (0.03 then 0.02 s): ordered by run among them only
    body = _get(dashboard + "/jobs?sort=run&window=2")
    assert "among the newest 2 jobs by last change only" in body
    assert re.findall(r'<tr class="job" data-id="([^"]+)"', body) == [ids[2], ids[3]]
    # the read API says the same: how many jobs the page ordered
    page = client.reader.search(JobFilter(), sort="run", window=2)
    assert page.window == 2 and page.to_dict()["window"] == 2
    # an indexed sort (end: the final statuses' indexes) orders every job, and says nothing
    assert 'id="window-note"' not in _get(dashboard + "/jobs?sort=ended")
    for bad in ("0", "1001", "x"):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(dashboard + f"/jobs?sort=run&window={bad}")
        assert err.value.code == 400 and "the newest jobs a sort without an index orders" in err.value.read().decode()
