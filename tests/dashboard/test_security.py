"""The dashboard's defences: hostile text in every field never runs (checked in the
browser), CSRF tokens on every state change, credentials, the bind rule, read-only, and
the app mounted under a prefix."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from dashhelpers import DASH_TASKS, Dashboards, answers, free_port
from helpers import wait_until, worker_env
from selenium.webdriver.common.by import By

from runtime.client import Client
from runtime.settings import Settings

SCRIPT = "<script>window.pwned = 'script'</script>"
ATTR = "\"'><img src=x onerror=\"window.pwned='onerror'\">"
URL = "javascript:window.pwned='url'"
ESC = "\x1b]8;;javascript:window.pwned='osc'\x1b\\x\x1b]8;;\x1b\\ \x1b[31mred"
HOSTILE = f"{SCRIPT} {ATTR} {URL} {ESC}"


def hostile_jobs(client: Client) -> list[str]:
    """Jobs carrying hostile text in params, exception messages, log lines, task paths and
    queue names."""
    return [client.queue_job("dashtasks.hostile", {"text": HOSTILE, "link": URL}, check=False),
            client.queue_job(f"evil.{SCRIPT}", {"x": ATTR}, check=False),
            legacy_queue(client, "q<script>window.pwned=1</script>"),
            legacy_queue(client, ATTR.replace(",", ""))]


def legacy_queue(client: Client, name: str) -> str:
    """A job waiting in queue ``name``, which enqueue refuses now (runtime.queuenames) but
    Redis may hold from before: written there directly."""
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, queue="legacy")
    keys = client.broker.keys
    pipe = client.redis.pipeline()
    pipe.hset(keys.job(job_id), "queue", name)
    pipe.zadd(keys.ready(name), {job_id: client.redis.zscore(keys.ready("legacy"), job_id)})
    pipe.delete(keys.ready("legacy"))
    pipe.srem(keys.queues, "legacy")
    pipe.sadd(keys.queues, name)
    pipe.execute()
    return job_id


def test_hostile_content_never_runs(client: Client, worker: Any, browser: Any, dashboard: str) -> None:
    ids = hostile_jobs(client)
    worker.burst(task_modules=DASH_TASKS)
    assert client.get_job(ids[0]).status.value == "failed" and client.get_job(ids[1]).status.value == "failed"
    # a dead worker's event and a degraded worker's entry carry hostile text too
    client.broker.registry.record_event({"event": "crash", "at": time.time(), "worker": SCRIPT, "reason": ATTR,
                                         "host": URL})
    client.broker.registry.write_entry("w-evil", {"id": "w-evil", "kind": "worker", "host": SCRIPT, "state": "recycling",
                                                  "recycle": ATTR, "heartbeat_at": repr(time.time()),
                                                  "queues": ATTR.replace(",", "")})
    pages = ["/", "/jobs", "/failures", "/failures?by=worker", "/queues", "/workers", "/operations",
             "/jobs?" + urllib.parse.urlencode({"q": HOSTILE, "path": SCRIPT, "exc": ATTR}),
             "/jobs?sort=run", "/jobs?sort=queued&status=queued", "/jobs?" + urllib.parse.urlencode({"sort": SCRIPT}),
             *(f"/jobs/{i}" for i in ids)]
    for page in pages:
        browser.get(dashboard + page)
        assert browser.execute_script("return window.pwned") is None, page
        links = browser.execute_script(
            "return Array.from(document.querySelectorAll('[href],[src],[action]'))"
            ".map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action'))")
        assert not [u for u in links if re.match(r"\s*javascript:", u, re.I)], (page, links)
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script"), page
    browser.get(f"{dashboard}/jobs/{ids[0]}")
    assert SCRIPT in browser.find_element(By.ID, "error").text  # shown as text
    assert "finished" not in browser.find_element(By.ID, "logs").text and SCRIPT in \
        browser.find_element(By.ID, "logs").text


def opener() -> urllib.request.OpenerDirector:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), NoRedirect())


def fetch(op: urllib.request.OpenerDirector, url: str, data: dict[str, str] | None = None,
          headers: dict[str, str] | None = None, origin: bool = True) -> tuple[int, str]:
    """GET ``url``, or POST ``data`` to it, as a browser does it: a POST carries the
    ``Origin`` of ``url`` (unless ``origin`` is false, or ``headers`` give their own)."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    parts = urllib.parse.urlsplit(url)
    sent = {"Origin": f"{parts.scheme}://{parts.netloc}"} if body is not None and origin else {}
    sent.update(headers or {})
    try:
        with op.open(urllib.request.Request(url, body, sent), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m, page
    return m.group(1)


def test_state_change_without_a_csrf_token_is_refused(client: Client, worker: Any, dashboard: str) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    status, page = fetch(op, f"{dashboard}/jobs/{job_id}")
    assert status == 200
    token = csrf_of(page)
    assert fetch(op, f"{dashboard}/jobs/{job_id}/requeue", {})[0] == 403
    assert fetch(op, f"{dashboard}/jobs/{job_id}/requeue", {"csrf": "0" * 64})[0] == 403
    assert fetch(opener(), f"{dashboard}/jobs/{job_id}/requeue", {"csrf": token})[0] == 403  # another browser
    assert fetch(op, f"{dashboard}/jobs/{job_id}/requeue", {"csrf": token},
                 {"Origin": "http://evil.example"})[0] == 403
    assert fetch(op, f"{dashboard}/bulk", {"action": "cancel", "queue": "default"})[0] == 403
    assert fetch(op, f"{dashboard}/jobs/{job_id}/move", {"to_queue": "elsewhere"})[0] == 403
    assert fetch(op, f"{dashboard}/queues/default/pause", {})[0] == 403
    assert fetch(opener(), f"{dashboard}/queues/default/pause", {"csrf": token})[0] == 403  # another browser
    assert client.get_job(job_id).status.value == "success"  # none of them did anything
    assert client.reader.queues()["queues"]["default"]["paused"] is False
    assert fetch(op, f"{dashboard}/jobs/{job_id}/requeue", {"csrf": token})[0] == 303
    assert client.get_job(job_id).status.value == "queued"


def test_a_post_needs_an_origin_or_referer_of_this_dashboard(client: Client, worker: Any, dashboard: str) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    url = f"{dashboard}/jobs/{job_id}/requeue"
    token = csrf_of(fetch(op, f"{dashboard}/jobs/{job_id}")[1])
    assert fetch(op, url, {"csrf": token}, {"Origin": "null"})[0] == 403  # an opaque origin: a sandboxed frame
    assert fetch(op, url, {"csrf": token}, origin=False)[0] == 403  # names none
    assert fetch(op, url, {"csrf": token}, {"Referer": "http://evil.example/x"}, origin=False)[0] == 403
    assert fetch(op, url, {"csrf": token}, {"Origin": dashboard.replace("127.0.0.1", "localhost")})[0] == 403
    assert client.get_job(job_id).status.value == "success"
    assert fetch(op, url, {"csrf": token}, {"Referer": f"{dashboard}/jobs/{job_id}"}, origin=False)[0] == 303
    assert client.get_job(job_id).status.value == "queued"


def test_read_only_refuses_every_action(client: Client, worker: Any, dashboards: Dashboards) -> None:
    url = dashboards.start("--read-only")
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    status, page = fetch(op, f"{url}/jobs/{job_id}")
    assert status == 200 and 'method="post"' not in page and "action-requeue" not in page
    token = "0" * 64  # the page has no form, so no token: the refusal comes before the check anyway
    for action in ("requeue", "cancel", "abort", "move"):
        assert fetch(op, f"{url}/jobs/{job_id}/{action}", {"csrf": token, "to_queue": "elsewhere"})[0] == 403
    for action in ("requeue", "cancel", "abort", "move"):
        assert fetch(op, f"{url}/bulk?action={action}&status=success")[0] == 403
        assert fetch(op, f"{url}/bulk", {"csrf": token, "action": action, "status": "success",
                                         "to_queue": "elsewhere"})[0] == 403
    for action in ("pause", "resume"):
        assert fetch(op, f"{url}/queues/default/{action}", {"csrf": token})[0] == 403
    assert "bulk-requeue" not in fetch(op, f"{url}/jobs?status=success")[1]
    assert 'method="post"' not in fetch(op, f"{url}/queues")[1] and 'method="post"' not in fetch(op, f"{url}/")[1]
    assert client.get_job(job_id).status.value == "success" and client.get_job(job_id).queue == "default"
    assert client.reader.queues()["queues"]["default"]["paused"] is False


def test_non_loopback_bind_without_credentials_refuses_to_start(settings: Settings, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "runtime", "dashboard", "--host", "0.0.0.0", "--port",
                           str(free_port())], env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve the dashboard on 0.0.0.0 without credentials; give --token"), done.stderr
    bad = subprocess.run([sys.executable, "-m", "runtime", "dashboard", "--token", "short"],
                         env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "16 characters" in bad.stderr


def test_credentials_are_asked_and_checked(dashboards: Dashboards) -> None:
    from runtime.dashboard.security import hash_password
    token = "t" * 24
    url = dashboards.start("--token", token, "--user", "alice:" + hash_password("wonderland", rounds=1000))

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    assert fetch(opener(), url + "/jobs")[0] == 401
    assert fetch(opener(), url + "/jobs", headers=basic("alice", "wrong"))[0] == 401
    assert fetch(opener(), url + "/jobs", headers=basic("alice", "wonderland"))[0] == 200
    assert fetch(opener(), url + "/jobs", headers=basic("anyone", token))[0] == 200
    assert fetch(opener(), url + "/jobs", headers={"Authorization": f"Bearer {token}"})[0] == 200
    status, _ = fetch(opener(), url + "/jobs", headers={"Authorization": "Bearer " + "x" * 24})
    assert status == 401


def test_security_headers(dashboard: str) -> None:
    with urllib.request.urlopen(dashboard + "/jobs", timeout=10) as r:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "SAMEORIGIN"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]


@pytest.mark.parametrize("prefix", ["/ops/jobs-ui"])
def test_mounted_under_a_prefix(settings: Settings, client: Client, tmp_path: Path, prefix: str) -> None:
    port = free_port()
    code = (f"import uvicorn; from starlette.applications import Starlette; from starlette.routing import Mount; "
            f"from runtime.dashboard import create_app; "
            f"uvicorn.run(Starlette(routes=[Mount({prefix!r}, app=create_app())]), port={port}, log_level='warning')")
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    proc = subprocess.Popen([sys.executable, "-c", code], env=worker_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}{prefix}"
        wait_until(lambda: answers(base + "/static/app.js"), 20, "the mounted app")
        status, page = fetch(opener(), base + "/jobs")
        assert status == 200 and f'href="{prefix}/jobs/{job_id}"' in page and f'src="{prefix}/static/app.js"' in page
        assert fetch(opener(), f"{base}/jobs/{job_id}")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
