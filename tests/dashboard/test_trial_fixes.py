"""What a fresh user's trial of the dashboard found, each checked over HTTP: a bulk dry
run counts only what its action can change (and the jobs page offers only such actions);
bad move targets and unknown queues are refused up front; links keep the page size; a
sort says which jobs it leaves out; long URLs are refused with 414/400; a POST's Origin
must match the scheme too; --insecure-no-auth warns."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashhelpers import DASH_TASKS, answers, free_port
from helpers import wait_until, worker_env
from test_security import csrf_of, fetch, opener

from runtime.client import Client
from runtime.settings import Settings


def test_dry_run_counts_what_the_action_can_change(client: Client, worker: Any, dashboard: str) -> None:
    failed = [client.queue_job("testtasks.raise_bad_str") for _ in range(4)]
    worker.burst()
    assert [client.get_job(i).status.value for i in failed] == ["failed"] * 4
    waiting = [client.queue_job("testtasks.add", {"a": i, "b": 1}) for i in range(3)]
    op = opener()
    status, page = fetch(op, f"{dashboard}/bulk?action=cancel&status=failed&queue=default")
    assert status == 200 and "4 jobs match this filter now: 0 can be changed" in _text(page)
    assert "4 will be skipped: 4 failed" in _text(page) and 'id="confirm"' not in page
    status, page = fetch(op, f"{dashboard}/bulk?action=cancel&queue=default")
    assert "7 jobs match this filter now: 3 can be changed (cancel applies to queued, retry, interrupt jobs " \
           "only); 4 will be skipped: 4 failed" in _text(page)
    assert re.search(r'id="confirm">Cancel 3 jobs<', page)
    assert sorted(re.findall(r'href="/jobs/([^"/]+)"', page)) == sorted(waiting)  # what it would change
    status, page = fetch(op, f"{dashboard}/bulk?action=requeue&queue=default")
    assert "4 can be changed" in _text(page) and "3 will be skipped: 3 queued" in _text(page)
    # the jobs page offers only the actions the filter's status allows
    jobs = fetch(op, f"{dashboard}/jobs?status=failed&queue=default")[1]
    assert re.findall(r'id="bulk-(requeue|cancel|abort|move)"', jobs) == ["requeue"]
    jobs = fetch(op, f"{dashboard}/jobs?status=queued&queue=default")[1]
    assert re.findall(r'id="bulk-(requeue|cancel|abort|move)"', jobs) == ["cancel", "move"]
    assert re.findall(r'id="bulk-(requeue|cancel|abort|move)"', fetch(op, f"{dashboard}/jobs?queue=default")[1]) == \
        ["requeue", "cancel", "abort", "move"]
    assert all(client.get_job(i).status.value == "failed" for i in failed)


def _text(page: str) -> str:
    """The page's text, tags dropped and spaces joined."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_bulk_move_refuses_a_bad_target_up_front(client: Client, dashboard: str) -> None:
    ids = [client.queue_job("testtasks.add", {"a": i, "b": 1}, queue="parked") for i in range(2)]
    op = opener()
    token = csrf_of(fetch(op, f"{dashboard}/bulk?action=move&queue=parked")[1])
    form = {"csrf": token, "action": "move", "filter": '{"queue": "parked"}'}
    for target, says in (({"to_queue": "a/b"}, "is not one"), ({"to_priority": "500"}, "from -100 to 100"),
                         ({"to_priority": "high"}, "from -100 to 100"), ({}, "give a queue and/or a priority")):
        status, page = fetch(op, f"{dashboard}/bulk", {**form, **target})
        assert status == 400 and says in page, (target, status)
    assert fetch(op, f"{dashboard}/operations")[1].count('href="/operations/') == 0  # none started
    assert [client.get_job(i).queue for i in ids] == ["parked", "parked"]


def test_pausing_an_unknown_queue_is_refused_as_the_cli_refuses_it(client: Client, dashboard: str) -> None:
    client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="reports")
    op = opener()
    token = csrf_of(fetch(op, f"{dashboard}/queues")[1])
    status, page = fetch(op, f"{dashboard}/queues/reprots/pause", {"csrf": token})
    assert status == 404 and "no queue &#39;reprots&#39; is known (did you mean &#39;reports&#39;?)" in page
    assert "--force" in page and "reprots" not in client.broker.registry.paused()
    assert fetch(op, f"{dashboard}/queues/reports/pause", {"csrf": token})[0] == 303
    assert fetch(op, f"{dashboard}/queues/reports/resume", {"csrf": token})[0] == 303


def test_links_keep_the_page_size_and_a_sort_says_what_it_leaves_out(client: Client, worker: Any,
                                                                     dashboard: str) -> None:
    for i in range(5):
        client.queue_job("testtasks.add", {"a": i, "b": 1})
    worker.burst()
    client.queue_job("testtasks.add", {"a": 9, "b": 9})  # never ran
    op = opener()
    page = fetch(op, f"{dashboard}/jobs?status=success&limit=2")[1]
    nxt = re.search(r'id="next" href="([^"]+)"', page)
    assert nxt and "limit=2" in nxt.group(1), page
    second = fetch(op, dashboard + nxt.group(1).replace("&amp;", "&"))[1]
    assert second.count('class="job"') == 2 and 'name="limit" value="2"' in second
    assert all("limit=2" in href for href in re.findall(r'id="sort-\w+" href="([^"]+)"', page))
    page = fetch(op, f"{dashboard}/jobs?sort=run")[1]
    assert "jobs that never ran (waiting, or cancelled before they started) or are still running are not " \
           "listed in this sort" in _text(page)
    assert 'id="sort-note"' not in fetch(op, f"{dashboard}/jobs")[1]
    overview = _text(fetch(op, f"{dashboard}/")[1])
    assert "failed · timeout · maxretries" in overview and "counts every failure status" in overview


def raw_get(url: str, target: str) -> int | str:
    """GET ``target`` (a raw request target) from the server of ``url``: the status, or
    the error when the connection was dropped."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", target)
        return conn.getresponse().status
    except OSError as exc:
        return repr(exc)
    finally:
        conn.close()


def test_long_urls_are_refused_with_a_status_not_a_dropped_connection(dashboard: str) -> None:
    assert raw_get(dashboard, "/jobs?q=" + "x" * 200_000) == 414
    assert raw_get(dashboard, "/jobs?" + "&".join(f"p{i}=1" for i in range(20_000))) == 414
    assert raw_get(dashboard, "/jobs?" + "&".join("a=1" for _ in range(100))) == 400
    assert raw_get(dashboard, "/jobs?q=" + "x" * 7_000) == 200  # long, but within the cap
    status, page = fetch(opener(), f"{dashboard}/jobs?since=" + "y" * 7_000)
    assert status == 400 and len(page) < 5_000  # the message quotes the value, cut


def test_a_post_from_the_https_origin_of_a_plain_http_dashboard_is_refused(client: Client, worker: Any,
                                                                            dashboard: str) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    token = csrf_of(fetch(op, f"{dashboard}/jobs/{job_id}")[1])
    https = dashboard.replace("http://", "https://")
    url = f"{dashboard}/jobs/{job_id}/requeue"
    assert fetch(op, url, {"csrf": token}, {"Origin": https})[0] == 403
    assert fetch(op, url, {"csrf": token}, {"Referer": https + "/jobs"}, origin=False)[0] == 403
    assert client.get_job(job_id).status.value == "success"
    assert fetch(op, url, {"csrf": token})[0] == 303


def test_insecure_no_auth_warns_on_stderr(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "dashboard", "--port", str(port), "--insecure-no-auth"],
                            env=worker_env(settings, task_modules=DASH_TASKS), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        wait_until(lambda: proc.poll() is not None or answers(f"http://127.0.0.1:{port}/static/app.js"), 20,
                   "the dashboard")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    warning = [line for line in err.splitlines() if line.startswith("warning: --insecure-no-auth")]
    assert len(warning) == 1 and f"anyone who can reach 127.0.0.1:{port} can see every job and act on them" \
        in warning[0], err
