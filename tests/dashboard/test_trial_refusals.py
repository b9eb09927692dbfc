"""What a verification trial found, each checked over HTTP: moves to a queue nothing
knows are refused; a bulk dry run is bounded, counted from the indexes where they
answer, limited in number and refused from another site; ``sort=duration`` works and
sort links keep the window; repeated parameters and absurd times are refused; the
resume refusal, the count's grammar and the CSRF cookie's path are right."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from test_security import csrf_of, fetch, opener
from test_trial_fixes import _text

from runtime.client import Client
from runtime.dashboard.dryrun import MAX_DRY_RUNS, READ_BUDGET


def test_moving_jobs_to_an_unknown_queue_is_refused(client: Client, dashboard: str) -> None:
    ids = [client.queue_job("testtasks.add", {"a": i, "b": 1}, queue="reports") for i in range(2)]
    op = opener()
    token = csrf_of(fetch(op, f"{dashboard}/jobs/{ids[0]}")[1])
    status, page = fetch(op, f"{dashboard}/jobs/{ids[0]}/move", {"csrf": token, "to_queue": "reprots"})
    assert status == 404 and "no queue &#39;reprots&#39; is known (did you mean &#39;reports&#39;?)" in page
    assert "start a worker on it or name it in the settings" in page
    form = {"csrf": token, "action": "move", "filter": '{"queue": "reports"}', "to_queue": "brandnewq"}
    status, page = fetch(op, f"{dashboard}/bulk", form)
    assert status == 404 and "no queue &#39;brandnewq&#39; is known" in page
    assert fetch(op, f"{dashboard}/operations")[1].count('href="/operations/') == 0  # none started
    assert [client.get_job(i).queue for i in ids] == ["reports", "reports"]
    # a known queue (one the settings name) is a target
    assert fetch(op, f"{dashboard}/jobs/{ids[0]}/move", {"csrf": token, "to_queue": "default"})[0] == 303
    assert client.get_job(client.get_job(ids[0]).moved_to or "").queue == "default"  # under a new id


def test_a_dry_run_is_bounded_and_counted_from_the_indexes_where_they_answer(client: Client,
                                                                            dashboard: str) -> None:
    total = READ_BUDGET + 50
    client.queue_jobs("testtasks.add", ({"a": i, "b": 1} for i in range(total)))
    op = opener()
    t0 = time.perf_counter()
    status, page = fetch(op, f"{dashboard}/bulk?action=cancel&queue=default")  # the status indexes answer
    assert status == 200 and f"{total:,} jobs match this filter now: {total:,} can be changed" in _text(page)
    assert time.perf_counter() - t0 < 2.0
    status, page = fetch(op, f"{dashboard}/bulk?action=cancel&path=testtasks.add")  # read job by job
    text = _text(page)
    assert status == 200 and f"at least {READ_BUDGET:,} jobs match this filter now (the count stopped after " \
           f"reading {READ_BUDGET:,} jobs; the operation takes them all): at least {READ_BUDGET:,} can be changed" \
           in text, text[:600]
    assert re.search(r'id="confirm">Cancel at least 10,000 jobs<', page)
    with ThreadPoolExecutor(MAX_DRY_RUNS + 2) as pool:  # more at once than a process counts
        runs = [pool.submit(fetch, opener(), f"{dashboard}/bulk?action=cancel&path=testtasks.add")
                for _ in range(MAX_DRY_RUNS + 2)]
        statuses = sorted(r.result()[0] for r in runs)
    assert 200 in statuses and 429 in statuses and set(statuses) == {200, 429}, statuses
    one = client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="lonely")
    assert "1 job matches this filter now: 1 can be changed" in _text(
        fetch(op, f"{dashboard}/bulk?action=cancel&queue=lonely")[1])
    assert client.get_job(one).status.value == "queued"


def test_a_dry_run_from_another_site_is_refused(client: Client, dashboard: str) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 1})
    url = f"{dashboard}/bulk?action=cancel&queue=default"
    for site in ("cross-site", "same-site"):  # same-site: a page on another port of this host
        status, page = fetch(opener(), url, headers={"Sec-Fetch-Site": site})
        assert status == 403 and "own pages" in page, site
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert fetch(opener(), url, headers=headers)[0] == 200, headers


def test_sort_by_duration_and_sort_links_keep_the_window(client: Client, worker: Any, dashboard: str) -> None:
    client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(3)])
    worker.burst()
    op = opener()
    status, page = fetch(op, f"{dashboard}/jobs?sort=duration&window=2")
    assert status == 200 and "among the newest 2 jobs" in page and page.count('class="job"') == 2
    assert fetch(op, f"{dashboard}/jobs?sort=run")[0] == 200
    heads = re.findall(r'id="sort-\w+" href="([^"]+)"', page)
    assert heads and all("window=2" in h for h in heads), heads
    assert 'name="window" value="2"' in page  # the filter form keeps it too


def test_a_parameter_given_twice_is_refused(dashboard: str) -> None:
    op = opener()
    for query in ("status=failed&status=queued", "limit=1&limit=2"):
        status, page = fetch(op, f"{dashboard}/jobs?{query}")
        assert status == 400 and "is given more than once" in page, query
    assert fetch(op, f"{dashboard}/api/states?ids=a&ids=b")[1].startswith('{"error"')
    assert fetch(op, f"{dashboard}/bulk?action=cancel&queue=a&queue=b")[0] == 400


def test_absurd_times_are_refused(dashboard: str) -> None:
    op = opener()
    for value in ("inf", "-inf", "nan", "1e308", "99999999999999999999", "-5", "9999999999999d"):
        for name in ("since", "until"):
            status, page = fetch(op, f"{dashboard}/jobs?{name}={value}")
            assert status == 400 and "bad time" in page, (name, value, status)
    assert fetch(op, f"{dashboard}/jobs?since=0&until=253402300799")[0] == 200
    assert fetch(op, f"{dashboard}/jobs?since=9999-12-31T23:59:59")[0] == 200


def test_resume_of_an_unknown_queue_is_refused_with_its_own_advice(client: Client, dashboard: str) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 1}, queue="reports")  # the queues page has its buttons
    op = opener()
    token = csrf_of(fetch(op, f"{dashboard}/queues")[1])
    status, page = fetch(op, f"{dashboard}/queues/nosuch/resume", {"csrf": token})
    assert status == 404 and "it is not paused: nothing to resume" in page and "--force" not in page
    status, page = fetch(op, f"{dashboard}/queues/nosuch/pause", {"csrf": token})
    assert status == 404 and "--force" in page
