"""The dashboard as one ASGI application (Starlette), made by :func:`create_app`.

Serve it with ``runtime dashboard`` (uvicorn), or mount it in your own ASGI app under a
prefix (``Mount("/jobs-ui", app=create_app(settings))``) behind your own auth. Every
request passes :class:`Guard` first: the Host header, credentials (throttled), the CSRF
cookie, security headers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import redis
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import Client
from ..errors import BrokerUnavailable
from ..redact import printable
from ..settings import Settings, load_settings
from .actions import routes as action_routes
from .dash import HERE, Dash
from .pages import routes as page_routes
from .security import COOKIE, HEADERS, Auth, Csrf, host_allowed
from .throttle import Throttle

#: Threads that run PBKDF2 (apart from the pages' thread pool, which they never fill).
HASH_THREADS = 2
#: Password checks waiting for those threads beyond which a new one is refused (429).
MAX_PENDING_HASHES = 8
#: Longest URL (path and query, bytes) served: a filter, its cursor and its sort fit many
#: times over; a longer one is refused (414) before any page reads its filter.
MAX_URL_BYTES = 8192
#: Most query parameters a URL may have (a filter has a dozen at most): more is refused (400).
MAX_PARAMS = 64


#: Names the user of a request from its ASGI scope (None: no user): create_app's ``user``.
UserOf = Callable[[Scope], str | None]
#: Longest user name written into a job's history.
MAX_USER = 100


class Guard:
    """ASGI middleware: refuses a URL over MAX_URL_BYTES (414) or with more than MAX_PARAMS
    query parameters (400), a request whose Host is not allowed (400), one without
    valid credentials (401, Basic) or after too many failed ones (429, Retry-After);
    gives each browser its CSRF cookie, and sets the security headers on every response
    (a response that sets its own Content-Security-Policy keeps it). ``allowed_hosts``:
    host names the Host header may name (``*`` any, ``*.example.com`` its subdomains);
    None: no check (the app it is mounted in decides). Without credentials of its own
    (``auth``), the user is the one ``user_of(scope)`` names (default :func:`host_user`),
    else ``anonymous``."""

    def __init__(self, app: ASGIApp, auth: Auth, allowed_hosts: Iterable[str] | None = None,
                 user_of: UserOf | None = None) -> None:
        self.app = app
        self.auth = auth
        self.user_of = user_of or host_user
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.throttle = Throttle()
        self._hasher: ThreadPoolExecutor | None = None
        self._pending = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = client_address(scope)
        refused = self._refuse_url(scope) or self._refuse_host(headers.get("host", ""))
        user: str | None = None
        if refused is None:
            user, refused = await self._authenticate(headers.get("authorization"), client)
        if refused is None and not self.auth.configured:  # the host app's user, when it names one
            user = _user_name(self.user_of(scope)) or user
        if refused is not None:
            await refused(scope, receive, self._with_headers(send, None))
            return
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header: a fresh cookie is set
            jar = SimpleCookie()
        cookie = jar[COOKIE].value if COOKIE in jar and re.fullmatch(r"[0-9a-f]{32}", jar[COOKIE].value) else None
        fresh = None if cookie else Csrf.new_cookie()
        scope.setdefault("state", {})
        scope["state"].update(user=user, csrf_cookie=cookie or fresh, client=client)
        await self.app(scope, receive, self._with_headers(send, fresh, scope.get("root_path") or "/"))

    @staticmethod
    def _refuse_url(scope: Scope) -> Response | None:
        """414 for a URL over MAX_URL_BYTES, 400 for more than MAX_PARAMS query parameters;
        None for one that may be served."""
        query: bytes = scope.get("query_string") or b""
        path: bytes = scope.get("raw_path") or str(scope.get("path", "")).encode()
        if len(path) + len(query) > MAX_URL_BYTES:
            return Response(f"refused: the URL is over {MAX_URL_BYTES:,} bytes ({len(path) + len(query):,}); "
                            "shorten the filter\n", status_code=414, media_type="text/plain")
        params = query.count(b"&") + query.count(b";") + 1 if query else 0
        if params > MAX_PARAMS:
            return Response(f"refused: the URL has {params:,} query parameters, at most {MAX_PARAMS} are "
                            "read\n", status_code=400, media_type="text/plain")
        return None

    def _refuse_host(self, host: str) -> Response | None:
        if self.allowed_hosts is None or host_allowed(host, self.allowed_hosts):
            return None
        return Response(f"refused: Host {host[:100]!r} is not this dashboard's (give --allowed-host NAME to "
                        "serve it under that name)\n", status_code=400, media_type="text/plain")

    async def _authenticate(self, authorization: str | None, client: str) -> tuple[str | None, Response | None]:
        """(the user, None), or (None, the refusal: 401, or 429 when throttled).

        The throttle is asked first, from the address and the claimed user name alone: an
        address or user past its limit gets the same 429, as fast, whatever password or
        token it sends (a remembered right password included), so a lockout tells nothing.
        Every check that is not a success counts against both keys: a wrong password, a
        wrong token, and one that could not run because MAX_PENDING_HASHES are waiting."""
        if not self.auth.configured:
            return "anonymous", None
        if not authorization:  # no guess: a browser's first request, before it asks for credentials
            return None, _unauthorized()
        keys = Throttle.keys(client, self.auth.claimed(authorization))
        wait = self.throttle.retry_after(keys)
        if wait > 0:
            return None, _too_many(wait)
        user, pending = self.auth.quick(authorization)
        self.throttle.begin(keys)
        if pending is not None:
            if self._pending >= MAX_PENDING_HASHES:
                return None, _too_many(1.0)
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="dashboard-pbkdf2")
            self._pending += 1
            try:  # PBKDF2 (~0.25 s) in threads of its own: the event loop and the pages go on
                user = await asyncio.get_running_loop().run_in_executor(self._hasher, self.auth.slow, *pending)
            finally:
                self._pending -= 1
        if user is None:
            return None, _unauthorized()
        self.throttle.succeeded(keys)
        return user, None

    @staticmethod
    def _with_headers(send: Send, fresh_cookie: str | None, path: str = "/") -> Send:
        """``send`` that adds the security headers, and ``fresh_cookie`` (when given) as the
        CSRF cookie of ``path``: the prefix the app is mounted at, so that the host app's
        other pages never receive it."""
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    if k not in h:
                        h[k] = v
                if fresh_cookie:
                    h.append("set-cookie", f"{COOKIE}={fresh_cookie}; Path={quote(path)}; HttpOnly; SameSite=Strict")
            await send(message)
        return wrapped


def _unauthorized() -> Response:
    return Response("credentials needed\n", status_code=401, media_type="text/plain",
                    headers={"www-authenticate": 'Basic realm="runtime dashboard", charset="UTF-8"'})


def _too_many(wait_s: float) -> Response:
    """429 with Retry-After (whole seconds): the same text for every refused attempt."""
    return Response(f"too many failed logins: try again in {math.ceil(wait_s)} s\n", status_code=429,
                    media_type="text/plain", headers={"retry-after": str(math.ceil(wait_s))})


def host_user(scope: Scope) -> str | None:
    """The user the host app authenticated, for job histories: ``scope["user"]`` when it
    is authenticated (Starlette's AuthenticationMiddleware sets it: its ``display_name``,
    else its ``identity``), else the WSGI environ's ``REMOTE_USER`` (mounted as WSGI:
    runtime.dashboard.wsgi); None when neither names one."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        for attr in ("display_name", "identity", "username"):
            name = getattr(user, attr, None)
            if isinstance(name, str) and name:
                return name
        return str(user)
    environ = scope.get("wsgi_environ") or {}
    name = environ.get("REMOTE_USER")
    return name if isinstance(name, str) and name else None


def _user_name(name: str | None) -> str | None:
    """``name`` fit for a history line: controls escaped, at most MAX_USER characters."""
    if name is None:
        return None
    return printable(str(name).strip())[:MAX_USER] or None


def client_address(scope: Scope) -> str:
    """The client's IP address (as the server, or its trusted proxy, saw it), or ``?``
    for anything that is not one: it is written into job histories."""
    host = str((scope.get("client") or ("?",))[0])
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "?"


def create_app(settings: Settings | None = None, *, read_only: bool = False, auth: Auth | None = None,
               redact: str | None = None, client: Client | None = None, sentry_link: str | None = None,
               allowed_hosts: Iterable[str] | None = None, user: UserOf | None = None) -> ASGIApp:
    """The dashboard over the deployment of ``settings`` (default: loaded as every command
    loads them), as an ASGI app. ``read_only``: no actions (hidden, and refused with 403).
    ``auth``: credentials to ask for (none: the app trusts whoever reaches it, as when
    mounted behind your own auth). ``redact``: a regular expression of the params keys
    whose values are hidden (default :data:`runtime.dashboard.present.DEFAULT_REDACT`).
    ``sentry_link``: a URL template with ``{event_id}`` for a job's Sentry event.
    ``allowed_hosts``: the names a request's Host header may give (runtime.dashboard.security.
    host_allowed); None (the default): any, as when mounted in an app that checks it.
    ``user``: names the user of a request from its ASGI scope, for the header and each
    touched job's history, when ``auth`` is none (default :func:`host_user`: the host's
    ``scope["user"]`` or the WSGI ``REMOTE_USER``; ``anonymous`` when it names none).
    Raises BrokerUnavailable when Redis cannot be reached; re.error for a bad pattern."""
    client = client or Client(settings or load_settings(), import_tasks=False)
    dash = Dash(client, read_only, sentry_link=sentry_link)
    if redact:
        dash.redact = re.compile(redact)
    routes = [*page_routes(dash), *action_routes(dash),
              Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")]
    unavailable = _unavailable(dash)
    app = Starlette(routes=routes, exception_handlers={
        404: _not_found(dash), 405: _not_allowed(dash), BrokerUnavailable: unavailable,
        redis.ConnectionError: unavailable, redis.TimeoutError: unavailable})
    app.state.dash = dash
    return Guard(app, auth or Auth(), allowed_hosts, user)


def _not_found(dash: Dash) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return dash.error(request, 404, "no such page")
    return handler


def _unavailable(dash: Dash) -> Any:
    """503 for Redis or MongoDB out of reach, whichever route met it (one that read Redis
    without the client's translation too): the same answer on every page and action."""
    async def handler(request: Request, exc: Exception) -> Response:
        text = str(exc) if isinstance(exc, BrokerUnavailable) else f"Redis unavailable: {exc}"
        return dash.error(request, 503, text)
    return handler


def _not_allowed(dash: Dash) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return dash.error(request, 405, "method not allowed")
    return handler
