"""The dashboard's pure parts: URL filters, redaction, safe links, credentials, CSRF."""

from __future__ import annotations

import base64
import re

import pytest

from runtime.dashboard.present import (
    DEFAULT_REDACT,
    job_filter,
    parse_time,
    redact,
    safe_href,
    sentry_href,
    trace_href,
)
from runtime.dashboard.security import (
    Auth,
    Csrf,
    check_bind,
    default_hosts,
    hash_password,
    host_allowed,
    is_loopback,
    verify_password,
)
from runtime.dashboard.throttle import Throttle
from runtime.errors import ConfigError

TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_times_and_filters_of_a_url() -> None:
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20") == parse_time("2023-11-14T22:13:20Z") == 1_700_000_000.0
    with pytest.raises(ValueError, match="bad time 'yesterday'"):
        parse_time("yesterday")
    f = job_filter({"status": "failed", "exc": "ValueError", "q": " x ", "path": "", "slower": "1.5"})
    assert f.to_dict() == {"status": "failed", "exc_type": "ValueError", "text": "x", "min_run_s": 1.5}
    with pytest.raises(ValueError):
        job_filter({"status": "nope"})
    with pytest.raises(ValueError, match="bad run time"):
        job_filter({"slower": "slow"})


def test_secrets_are_redacted_at_any_depth() -> None:
    pattern = re.compile(DEFAULT_REDACT)
    params = {"user": "ann", "password": "p", "nested": [{"API_KEY": "k", "url": "redis://:pw@host/0"}],
              "auth_token": {"a": 1}}
    assert redact(params, pattern) == {"user": "ann", "password": "***",
                                       "nested": [{"API_KEY": "***", "url": "redis://:***@host/0"}],
                                       "auth_token": "***"}


def test_the_default_pattern_knows_the_common_secret_names() -> None:
    pattern = re.compile(DEFAULT_REDACT)
    secret = ["password", "passphrase", "cookie", "session", "session_id", "bearer", "jwt", "ssh_key", "sshKey",
              "otp", "OTP", "pin", "pin_code", "sig", "signature", "request_signature", "client_secret", "Api-Key"]
    plain = ["spinner", "shipping", "design", "signal", "topic", "user", "count"]
    shown = redact(dict.fromkeys(secret + plain, "v"), pattern)
    assert [k for k in secret if shown[k] != "***"] == [] and [k for k in plain if shown[k] != "v"] == []


def test_links_from_stored_data_are_http_only() -> None:
    assert safe_href("javascript:alert(1)") is None and safe_href(" JavaScript:x") is None
    assert safe_href("data:text/html,x") is None and safe_href("https://a.example/x") == "https://a.example/x"
    assert trace_href("http://jaeger:16686/trace/{trace_id}", TRACE) == f"http://jaeger:16686/trace/{TRACE}"
    assert trace_href("http://jaeger/trace/{trace_id}", "x\" onmouseover=1") is None
    assert trace_href("javascript:{trace_id}", TRACE) is None
    assert sentry_href("https://sentry.example/?query={event_id}", TRACE) == f"https://sentry.example/?query={TRACE}"
    assert sentry_href("https://sentry.example/{oops}", TRACE) is None and sentry_href(None, TRACE) is None


def test_credentials() -> None:
    stored = hash_password("s3cret", rounds=1000)
    assert verify_password("s3cret", stored) and not verify_password("nope", stored)
    assert not verify_password("s3cret", "garbage")
    auth = Auth.parse("t" * 20, [f"ann:{stored}"])

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert auth.user(basic("ann", "s3cret")) == "ann" and auth.user(basic("ann", "x")) is None
    # the token is "token" whatever user name comes with it: the client chose that name
    assert auth.user(basic("bob", "t" * 20)) == "token" and auth.user("Bearer " + "t" * 20) == "token"
    assert auth.user(basic("ann from 10.9.9.9 <b>x</b>", "t" * 20)) == "token"
    assert auth.user(None) is None and auth.user("Basic !!!") is None and auth.user("Digest x") is None
    assert Auth().user(None) == "anonymous"
    with pytest.raises(ConfigError, match="NAME:HASH"):
        Auth.parse(None, ["ann:plaintext"])
    with pytest.raises(ConfigError, match="16 characters"):
        Auth.parse("short", [])
    for name in ("ann from 10.9.9.9", "<b>x</b>", "a" * 65, "-x"):
        with pytest.raises(ConfigError, match="letters, digits"):
            Auth.parse(None, [f"{name}:{stored}"])


def test_host_header_rule() -> None:
    hosts = default_hosts("127.0.0.1", ["jobs.example.com", "*.corp.example"])
    for ok in ("127.0.0.1:5555", "localhost", "LOCALHOST:1", "[::1]:5555", "jobs.example.com", "a.corp.example:80"):
        assert host_allowed(ok, hosts), ok
    for bad in ("evil.example:5555", "", "10.0.0.5:5555", "jobs.example.com.evil", "corp.example", "[::2]"):
        assert not host_allowed(bad, hosts), bad
    assert host_allowed("10.0.0.5:5555", default_hosts("0.0.0.0")) and not host_allowed("x.example", default_hosts("::"))


def test_throttle_counts_failures_in_a_window() -> None:
    now = [0.0]
    t = Throttle(per_address=3, per_user=2, window_s=60.0, clock=lambda: now[0])
    keys = t.keys("10.0.0.1", "ann")
    t.begin(keys)
    t.succeeded(keys)  # a success is not counted
    t.begin(keys)
    t.begin(keys)
    assert t.retry_after(keys) == 60.0 and t.retry_after(t.keys("10.0.0.2", "bob")) == 0
    assert t.retry_after(t.keys("10.0.0.1", "bob")) == 0  # the address has one more
    now[0] = 60.0
    assert t.retry_after(keys) == 0


def test_bind_rule_and_csrf_tokens() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")
    check_bind("127.0.0.1", Auth(), False)
    check_bind("0.0.0.0", Auth(token="t" * 16), False)
    check_bind("0.0.0.0", Auth(), True)
    with pytest.raises(ConfigError, match="refusing to serve the dashboard on 0.0.0.0"):
        check_bind("0.0.0.0", Auth(), False)
    csrf = Csrf()
    cookie = csrf.new_cookie()
    assert csrf.valid(cookie, csrf.token(cookie))
    assert not csrf.valid(cookie, Csrf().token(cookie)) and not csrf.valid(None, "x") and not csrf.valid(cookie, None)
    assert not csrf.valid(csrf.new_cookie(), csrf.token(cookie))
