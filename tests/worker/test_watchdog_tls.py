"""The watchdog's own client (runtime.resp) over TLS verifies the server's certificate as
the worker's redis-py connections do: a Redis whose certificate nobody vouches for is
refused, unless the URL says ``ssl_cert_reqs=none``; ``ssl_ca_certs`` names the CA to
trust (a real redis-server with TLS, a CA and a certificate made by openssl)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import wait_until

from runtime.resp import RedisError, Resp
from runtime.worker.watching import tls_settings

SERVER = "/usr/bin/redis-server"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server serving TLS only on a free port, and the CA file of its certificate."""
    if not Path(SERVER).exists() or subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
              "-days", "1", "-subj", "/CN=test-ca", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=localhost", cwd=tmp_path)
    (tmp_path / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
              "-out", "server.crt", "-days", "1", "-extfile", "san.cnf", cwd=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
                             "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
                             "--appendonly", "no"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        url = f"rediss://127.0.0.1:{port}?ssl_ca_certs={tmp_path / 'ca.crt'}"
        wait_until(lambda: _pings(url), 10, "the TLS redis-server")
        yield port, tmp_path / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def _watchdog_ping(url: str, port: int) -> str:
    """PING through the watchdog's client, configured from ``url`` as a worker does it."""
    kw = redis.Redis.from_url(url).connection_pool.connection_kwargs
    r = Resp({"host": "127.0.0.1", "port": port, "ssl": True, **tls_settings(kw)})
    try:
        return str(r.call("PING"))
    finally:
        r.close()


def test_the_watchdog_verifies_the_certificate_unless_told_not_to(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    with pytest.raises((RedisError, OSError)):  # a self-signed CA nobody trusts: refused, as redis-py does
        _watchdog_ping(f"rediss://127.0.0.1:{port}", port)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(f"rediss://127.0.0.1:{port}").ping()
    assert _watchdog_ping(f"rediss://127.0.0.1:{port}?ssl_ca_certs={ca}", port) == "PONG"
    assert _watchdog_ping(f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none", port) == "PONG"
