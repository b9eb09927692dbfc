"""The dashboard as one ASGI application (Starlette), made by :func:`create_app`.

Serve it with ``runtime dashboard`` (uvicorn), or mount it in your own ASGI app under a
prefix (``Mount("/jobs-ui", app=create_app(settings))``) behind your own auth. Every
request passes :class:`Guard` first: credentials, the CSRF cookie, security headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import Client
from ..redact import mask
from ..settings import Settings, load_settings
from . import present
from .security import COOKIE, HEADERS, Auth, Csrf

HERE = Path(__file__).parent


@dataclass
class Dash:
    """What every page and action uses: the client (its reader and middleware chain, which
    describes reports), whether actions are allowed, the CSRF key, the redaction pattern."""

    client: Client
    read_only: bool = False
    csrf: Csrf = field(default_factory=Csrf)
    redact: re.Pattern[str] = field(default_factory=lambda: re.compile(present.DEFAULT_REDACT))
    env: jinja2.Environment = field(default_factory=lambda: _environment())

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """Template ``name`` with ``context`` and what every page needs (``base``: the
        prefix the app is mounted at, ``csrf``: the form token, ``read_only``, ``user``)."""
        cookie = getattr(request.state, "csrf_cookie", "")
        text = self.env.get_template(name).render(
            base=request.scope.get("root_path", ""), csrf=self.csrf.token(cookie) if cookie else "",
            read_only=self.read_only, user=getattr(request.state, "user", None), request=request, **context)
        return HTMLResponse(text, status_code=status_code)

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        """A page saying ``message`` (one line) with ``status_code``."""
        return self.render(request, "error.html", status_code=status_code, message=message)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=present.when, ago=present.ago, seconds=present.seconds, pretty=present.pretty, mask=mask)
    return env


class Guard:
    """ASGI middleware: refuses a request without valid credentials (401, Basic), gives
    each browser its CSRF cookie, and sets the security headers on every response
    (a response that sets its own Content-Security-Policy keeps it)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        user = self.auth.user(headers.get("authorization"))
        if user is None:
            response = Response("credentials needed\n", status_code=401, media_type="text/plain",
                                headers={"www-authenticate": 'Basic realm="runtime dashboard", charset="UTF-8"'})
            await response(scope, receive, self._with_headers(send, None))
            return
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header: a fresh cookie is set
            jar = SimpleCookie()
        cookie = jar[COOKIE].value if COOKIE in jar and re.fullmatch(r"[0-9a-f]{32}", jar[COOKIE].value) else None
        fresh = None if cookie else Csrf.new_cookie()
        scope.setdefault("state", {})
        scope["state"].update(user=user, csrf_cookie=cookie or fresh, client=(scope.get("client") or ("?",))[0])
        await self.app(scope, receive, self._with_headers(send, fresh))

    @staticmethod
    def _with_headers(send: Send, fresh_cookie: str | None) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    if k not in h:
                        h[k] = v
                if fresh_cookie:
                    h.append("set-cookie", f"{COOKIE}={fresh_cookie}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)
        return wrapped


def create_app(settings: Settings | None = None, *, read_only: bool = False, auth: Auth | None = None,
               redact: str | None = None, client: Client | None = None) -> ASGIApp:
    """The dashboard over the deployment of ``settings`` (default: loaded as every command
    loads them), as an ASGI app. ``read_only``: no actions (hidden, and refused with 403).
    ``auth``: credentials to ask for (none: the app trusts whoever reaches it, as when
    mounted behind your own auth). ``redact``: a regular expression of the params keys
    whose values are hidden (default :data:`runtime.dashboard.present.DEFAULT_REDACT`).
    Raises BrokerUnavailable when Redis cannot be reached; re.error for a bad pattern."""
    from . import actions, pages
    client = client or Client(settings or load_settings(), import_tasks=False)
    dash = Dash(client, read_only)
    if redact:
        dash.redact = re.compile(redact)
    routes = [*pages.routes(dash), *actions.routes(dash),
              Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, exception_handlers={404: _not_found(dash), 405: _not_allowed(dash)})
    app.state.dash = dash
    return Guard(app, auth or Auth())


def _not_found(dash: Dash) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return dash.error(request, 404, "no such page")
    return handler


def _not_allowed(dash: Dash) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return dash.error(request, 405, "method not allowed")
    return handler
