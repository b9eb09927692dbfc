"""The dashboard as a WSGI application, to mount in Flask, Django or any WSGI app under a
path prefix (the server's SCRIPT_NAME): the ASGI app of runtime.dashboard.app run by
a2wsgi, which serves each request on an event loop of its own thread."""

from __future__ import annotations

from typing import Any

from a2wsgi import ASGIMiddleware

from ..settings import Settings
from .app import create_app


def create_wsgi_app(settings: Settings | None = None, **options: Any) -> ASGIMiddleware:
    """The dashboard of :func:`runtime.dashboard.create_app` as a WSGI app (``options``:
    create_app's keywords). Without ``auth``, the user recorded in job histories is the
    environ's ``REMOTE_USER`` when the host app sets it (or what ``user`` names, given the
    ASGI scope, whose ``scope["wsgi_environ"]`` is the environ). Raises as create_app."""
    return ASGIMiddleware(create_app(settings, **options))  # type: ignore[arg-type]
