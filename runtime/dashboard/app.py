"""The dashboard as one ASGI application (Starlette), made by :func:`create_app`.

Serve it with ``runtime dashboard`` (uvicorn), or mount it in your own ASGI app under a
prefix (``Mount("/jobs-ui", app=create_app(settings))``) behind your own auth. Every
request passes :class:`Guard` first: credentials, the CSRF cookie, security headers.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import Client
from ..settings import Settings, load_settings
from .actions import routes as action_routes
from .dash import HERE, Dash
from .pages import routes as page_routes
from .security import COOKIE, HEADERS, Auth, Csrf


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
        authorization = headers.get("authorization")
        # a first check of a password runs PBKDF2 (~0.3 s): in a thread, not in the event loop
        user = await run_in_threadpool(self.auth.user, authorization) if authorization and self.auth.configured \
            else self.auth.user(authorization)
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
               redact: str | None = None, client: Client | None = None, sentry_link: str | None = None) -> ASGIApp:
    """The dashboard over the deployment of ``settings`` (default: loaded as every command
    loads them), as an ASGI app. ``read_only``: no actions (hidden, and refused with 403).
    ``auth``: credentials to ask for (none: the app trusts whoever reaches it, as when
    mounted behind your own auth). ``redact``: a regular expression of the params keys
    whose values are hidden (default :data:`runtime.dashboard.present.DEFAULT_REDACT`).
    ``sentry_link``: a URL template with ``{event_id}`` for a job's Sentry event.
    Raises BrokerUnavailable when Redis cannot be reached; re.error for a bad pattern."""
    client = client or Client(settings or load_settings(), import_tasks=False)
    dash = Dash(client, read_only, sentry_link=sentry_link)
    if redact:
        dash.redact = re.compile(redact)
    routes = [*page_routes(dash), *action_routes(dash),
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
