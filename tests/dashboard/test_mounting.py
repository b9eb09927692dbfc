"""The dashboard mounted in a host app under a path prefix, behind the host's auth: as a
WSGI app in a werkzeug server (the way Flask mounts one: DispatcherMiddleware), and as an
ASGI app under Starlette's AuthenticationMiddleware. Every link of its pages works under
the prefix, and an action is recorded as done by the host's user."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dashhelpers import answers, free_port
from helpers import wait_until, worker_env
from test_security import csrf_of, fetch, opener

from runtime.client import Client
from runtime.settings import Settings

PREFIX = "/ops/jobs-ui"

#: A WSGI host app: its own page at /, the dashboard at PREFIX behind its "auth" (a header
#: the test sends, standing for a session), which sets REMOTE_USER as WSGI auth does.
WSGI_HOST = """
import sys
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from runtime.dashboard import create_wsgi_app

def home(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the host app"]

def login_required(app):
    def guarded(environ, start_response):
        user = environ.get("HTTP_X_TEST_USER")
        if not user:
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"log in first"]
        environ["REMOTE_USER"] = user
        return app(environ, start_response)
    return guarded

app = DispatcherMiddleware(home, {sys.argv[2]: login_required(create_wsgi_app())})
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""

#: An ASGI host app: Starlette's AuthenticationMiddleware sets scope["user"] from a header;
#: the dashboard is mounted twice, naming the user by default and by a ``user`` hook.
ASGI_HOST = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount
from runtime.dashboard import create_app

class Header(AuthenticationBackend):
    async def authenticate(self, conn):
        user = conn.headers.get("x-test-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None

prefix = sys.argv[2]
app = Starlette(routes=[Mount(prefix + "-hook", app=create_app(user=lambda scope: "hook:" + scope["user"].display_name)),
                        Mount(prefix, app=create_app())],
                middleware=[Middleware(AuthenticationMiddleware, backend=Header())])
uvicorn.run(app, port=int(sys.argv[1]), log_level="warning")
"""


@contextmanager
def host(settings: Settings, tmp_path: Path, code: str) -> Iterator[str]:
    """Run the host app ``code`` (its port and PREFIX as arguments); yields its base URL."""
    script = tmp_path / "host_app.py"
    script.write_text(code)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port), PREFIX], env=worker_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or answers(base + PREFIX + "/static/app.js"), 20, "the host app")
        assert proc.poll() is None
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def links(page: str) -> set[str]:
    """Every local href, src and form action of ``page``."""
    found = {m.replace("&amp;", "&") for m in re.findall(r'(?:href|src|action)="(/[^"]*)"', page)}
    return {u for u in found if not u.endswith(("/requeue", "/pause", "/resume", "/cancel", "/abort", "/move"))
            and u != PREFIX + "/bulk"}


def cookie_path(url: str, headers: dict[str, str] | None = None) -> str | None:
    """The ``Path`` of the CSRF cookie a fresh browser is given at ``url``."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        cookie = r.headers.get("set-cookie") or ""
    m = re.search(r"rt_csrf=[0-9a-f]+;.*?Path=([^;]+)", cookie)
    return m.group(1) if m else None


def requeue_as(op: Any, url: str, job_id: str, headers: dict[str, str]) -> tuple[int, str]:
    page = fetch(op, f"{url}/jobs/{job_id}", headers=headers)[1]
    return fetch(op, f"{url}/jobs/{job_id}/requeue", {"csrf": csrf_of(page)}, headers)[0], page


def test_wsgi_app_under_a_prefix_behind_the_host_auth(settings: Settings, client: Client, worker: Any,
                                                      tmp_path: Path) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    worker.burst()
    alice = {"X-Test-User": "alice"}
    with host(settings, tmp_path, WSGI_HOST) as base:
        url = base + PREFIX
        assert fetch(opener(), base + "/")[1] == "the host app"
        assert fetch(opener(), url + "/jobs")[0] == 401  # the host's auth comes first
        op = opener()
        status, page = fetch(op, url + "/jobs", headers=alice)
        assert status == 200 and f'href="{PREFIX}/jobs/{job_id}"' in page
        followed = links(page) | links(fetch(op, f"{url}/jobs/{job_id}", headers=alice)[1])
        assert f"{PREFIX}/static/app.js" in followed and f"{PREFIX}/failures" in followed
        for link in sorted(followed):
            assert link.startswith(PREFIX), link
            assert fetch(op, base + link, headers=alice)[0] == 200, link
        status, page = requeue_as(op, url, job_id, alice)
        assert status == 303 and "alice" in page  # the header names the host's user
        assert cookie_path(url + "/jobs", alice) == PREFIX  # the host's other pages never get it
    entry = client.get_job(job_id).history[-1]
    assert entry["status"] == "queued" and entry["by"] == "dashboard user alice from 127.0.0.1"


def test_asgi_app_records_the_host_user_or_the_hook_name(settings: Settings, client: Client, worker: Any,
                                                         tmp_path: Path) -> None:
    first, second = (client.queue_job("testtasks.add", {"a": i, "b": 2}) for i in range(2))
    worker.burst()
    with host(settings, tmp_path, ASGI_HOST) as base:
        assert requeue_as(opener(), base + PREFIX, first, {"X-Test-User": "bob"})[0] == 303
        assert requeue_as(opener(), base + PREFIX + "-hook", second, {"X-Test-User": "carol"})[0] == 303
        status, page = fetch(opener(), f"{base}{PREFIX}/jobs/{first}")  # no user: anonymous
        assert status == 200 and "anonymous" in page
        assert cookie_path(f"{base}{PREFIX}-hook/jobs") == PREFIX + "-hook"
    assert client.get_job(first).history[-1]["by"] == "dashboard user bob from 127.0.0.1"
    assert client.get_job(second).history[-1]["by"] == "dashboard user hook:carol from 127.0.0.1"
