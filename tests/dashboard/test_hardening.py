"""The served dashboard against hostile clients: another Host (DNS rebinding) is
refused, password guessing is throttled and cannot stall other requests or tell which
users exist, and the client address of a trusted proxy's requests is the client's."""

from __future__ import annotations

import base64
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dashhelpers import Dashboards
from test_security import csrf_of, fetch, opener

from runtime.client import Client
from runtime.dashboard.security import hash_password


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_another_host_name_is_refused(client: Client, worker: Any, dashboards: Dashboards) -> None:
    url = dashboards.start()
    port = url.rsplit(":", 1)[1]
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    op = opener()
    evil = {"Host": f"evil.example:{port}"}
    status, body = fetch(op, f"{url}/jobs/{job_id}", headers=evil)
    assert status == 400 and "--allowed-host" in body
    assert not [c for c in op.handlers if getattr(c, "cookiejar", None) and list(c.cookiejar)]  # no cookie
    status, page = fetch(op, f"{url}/jobs/{job_id}")  # as 127.0.0.1: served, with a cookie and token
    assert status == 200
    assert fetch(op, f"{url}/jobs/{job_id}/requeue", {"csrf": csrf_of(page)},
                 {**evil, "Origin": f"http://evil.example:{port}"})[0] == 400
    assert client.get_job(job_id).status.value == "success"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert fetch(opener(), f"{url}/jobs", headers={"Host": host})[0] == 200, host
    named = dashboards.start("--allowed-host", "jobs.example.com")
    assert fetch(opener(), f"{named}/jobs", headers={"Host": "jobs.example.com"})[0] == 200
    assert fetch(opener(), f"{named}/jobs", headers={"Host": "evil.example"})[0] == 400


def timed(url: str, user: str, password: str, address: str | None = None) -> tuple[int, float]:
    """GET /jobs as ``user`` (from ``address``, by X-Forwarded-For: a dashboard started
    with --forwarded-allow-ips 127.0.0.1 takes it as the client's): status, seconds."""
    headers = {**basic(user, password), **({"X-Forwarded-For": address} if address else {})}
    t0 = time.perf_counter()
    status = fetch(opener(), url + "/jobs", headers=headers)[0]
    return status, time.perf_counter() - t0


def test_unknown_users_cost_a_hash_and_guessing_is_throttled(dashboards: Dashboards) -> None:
    url = dashboards.start("--user", "alice:" + hash_password("wonderland"), "--user",
                           "bob:" + hash_password("builder", rounds=1000), "--forwarded-allow-ips", "127.0.0.1")
    assert timed(url, "alice", "wonderland")[0] == 200  # remembered from now on
    known = [timed(url, "alice", f"wrong{i}") for i in range(2)]
    unknown = [timed(url, "nobody", f"wrong{i}") for i in range(2)]
    assert {s for s, _ in known + unknown} == {401}
    assert statistics.median(t for _, t in unknown) > 0.5 * min(t for _, t in known), (known, unknown)

    assert timed(url, "bob", "builder", "198.51.100.2")[0] == 200
    with ThreadPoolExecutor(40) as pool:  # 40 guesses at once from one address, and another user logged in
        guesses = [pool.submit(timed, url, "alice", f"guess{i}", "198.51.100.1") for i in range(40)]
        status, took = pool.submit(timed, url, "bob", "builder", "198.51.100.2").result()  # among the guesses
        results = [g.result() for g in guesses]
    assert status == 200 and took < 1.0, took
    assert sum(1 for s, _ in results if s == 429) >= 30, results
    status, headers = throttled(url, "alice")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    # alice is locked out, from any address, whatever the password: her right one too
    assert timed(url, "alice", "wonderland", "198.51.100.3")[0] == 429


def throttled(url: str, user: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/jobs", headers=basic(user, "x")), timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_forwarded_for_is_trusted_only_from_the_allowed_proxy(client: Client, worker: Any,
                                                                dashboards: Dashboards) -> None:
    proxied = dashboards.start("--forwarded-allow-ips", "127.0.0.1")
    direct = dashboards.start()
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    for url, expect in ((direct, "127.0.0.1"), (proxied, "203.0.113.9")):
        worker.burst()
        op = opener()
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        status, page = fetch(op, f"{url}/jobs/{job_id}", headers=forwarded)
        assert status == 200
        assert fetch(op, f"{url}/jobs/{job_id}/requeue", {"csrf": csrf_of(page)}, forwarded)[0] == 303
        assert client.get_job(job_id).history[-1]["by"] == f"dashboard user anonymous from {expect}"
