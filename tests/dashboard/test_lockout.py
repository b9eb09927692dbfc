"""A lockout tells nothing: once a user name or a client address is past its limit of
failed checks, every attempt of it gets the same 429, as fast, whatever password or
token it sends (a password the dashboard remembers as verified included); bearer token
guesses count against the address as password guesses do."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from dashhelpers import Dashboards
from test_hardening import basic

from runtime.dashboard.security import hash_password

TOKEN = "t" * 24


def attempt(url: str, headers: dict[str, str], address: str) -> tuple[int, str, str | None, float]:
    """GET /jobs with ``headers`` from ``address`` (X-Forwarded-For, trusted from
    127.0.0.1): status, body (a page: its first line only), Retry-After, seconds."""
    request = urllib.request.Request(url + "/jobs", headers={**headers, "X-Forwarded-For": address})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, body, retry = r.status, r.read().decode(), r.headers.get("retry-after")
    except urllib.error.HTTPError as e:
        status, body, retry = e.code, e.read().decode(), e.headers.get("retry-after")
    return status, body.splitlines()[0] if body else "", retry, time.perf_counter() - t0


def test_a_locked_out_user_gets_429_whatever_the_password(dashboards: Dashboards) -> None:
    # dave has logged in before (his password is remembered as verified); carol never has
    url = dashboards.start("--user", "dave:" + hash_password("dave-pw", rounds=1000),
                           "--user", "carol:" + hash_password("carol-pw"), "--user",
                           "erin:" + hash_password("erin-pw", rounds=1000), "--forwarded-allow-ips", "127.0.0.1")
    assert attempt(url, basic("dave", "dave-pw"), "203.0.113.1")[0] == 200
    for user, address in (("dave", "203.0.113.1"), ("carol", "203.0.113.2")):
        failed = [attempt(url, basic(user, f"wrong{i}"), address) for i in range(5)]
        assert [a[0] for a in failed] == [401] * 5, (user, failed)
        wrong = attempt(url, basic(user, "wrong6"), address)
        right = attempt(url, basic(user, f"{user}-pw"), address)
        elsewhere = attempt(url, basic(user, f"{user}-pw"), "198.51.100.7")  # the user is locked out anywhere
        assert wrong[0] == right[0] == elsewhere[0] == 429, (user, wrong, right, elsewhere)
        assert wrong[1] == right[1] and wrong[1].startswith("too many failed logins"), (wrong, right)
        assert abs(int(wrong[2] or 0) - int(right[2] or 0)) <= 1 and 1 <= int(right[2] or 0) <= 60
    # carol's hash is a real one (~0.25 s): a refused attempt ran no check at all, right or wrong
    slowest_refusal = max(attempt(url, basic("carol", p), "203.0.113.2")[3] for p in ("carol-pw", "x"))
    assert slowest_refusal < min(a[3] for a in failed), (slowest_refusal, failed)
    # another user, from another address, is served meanwhile
    assert attempt(url, basic("erin", "erin-pw"), "198.51.100.8")[0] == 200


def test_an_address_past_its_limit_gets_429_for_any_credentials(dashboards: Dashboards) -> None:
    url = dashboards.start("--token", TOKEN, "--user", "erin:" + hash_password("erin-pw", rounds=1000),
                           "--forwarded-allow-ips", "127.0.0.1")
    assert attempt(url, basic("erin", "erin-pw"), "203.0.113.5")[0] == 200  # remembered
    guesses = [attempt(url, basic(f"user{i}", "guess"), "203.0.113.5")[0] for i in range(10)]
    assert guesses == [401] * 10
    for headers in (basic("erin", "erin-pw"), basic("any", TOKEN), {"Authorization": f"Bearer {TOKEN}"}):
        assert attempt(url, headers, "203.0.113.5")[0] == 429, headers
    assert attempt(url, basic("erin", "erin-pw"), "203.0.113.6")[0] == 200  # erin herself is not locked out


def test_bearer_token_guesses_are_limited_per_address(dashboards: Dashboards) -> None:
    url = dashboards.start("--token", TOKEN, "--forwarded-allow-ips", "127.0.0.1")
    statuses = [attempt(url, {"Authorization": f"Bearer wrong-token-{i:04d}xxxxxxxx"}, "203.0.113.9")[0]
                for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2, statuses
    assert attempt(url, {"Authorization": f"Bearer {TOKEN}"}, "203.0.113.9")[0] == 429
    assert attempt(url, {"Authorization": f"Bearer {TOKEN}"}, "203.0.113.10")[0] == 200
    # a success is not counted: the right token, many times, never locks its address out
    assert [attempt(url, {"Authorization": f"Bearer {TOKEN}"}, "203.0.113.11")[0] for _ in range(12)] == [200] * 12
