"""What every page and action shares (:class:`Dash`): the client, the read-only flag,
the CSRF key, the redaction pattern and the templates (Jinja2, autoescaped)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..client import Client
from ..errors import BrokerUnavailable, InvalidParams, InvalidTransition, JobNotFound
from ..redact import mask, printable
from .present import DEFAULT_REDACT, age, ago, fmt_span, pretty, seconds, when
from .security import Csrf

HERE = Path(__file__).parent
#: Longest error message a page shows.
MAX_MESSAGE = 500


@dataclass
class Dash:
    """What every page and action uses: the client (its reader and middleware chain, which
    describes reports), whether actions are allowed, the CSRF key, the redaction pattern."""

    client: Client
    read_only: bool = False
    csrf: Csrf = field(default_factory=Csrf)
    redact: re.Pattern[str] = field(default_factory=lambda: re.compile(DEFAULT_REDACT))
    env: jinja2.Environment = field(default_factory=lambda: _environment())
    #: a link to a Sentry event: a URL template with ``{event_id}`` (None: no link)
    sentry_link: str | None = None

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """Template ``name`` with ``context`` and what every page needs (``base``: the
        prefix the app is mounted at, ``csrf``: the form token, ``read_only``, ``user``)."""
        cookie = getattr(request.state, "csrf_cookie", "")
        text = self.env.get_template(name).render(
            base=request.scope.get("root_path", ""), csrf=self.csrf.token(cookie) if cookie else "",
            read_only=self.read_only, user=getattr(request.state, "user", None), request=request, **context)
        return HTMLResponse(text, status_code=status_code)

    def error(self, request: Request, status_code: int, message: str) -> Response:
        """A page saying ``message`` (one line, cut at MAX_MESSAGE characters: it may quote
        what the URL gave) with ``status_code``; under ``/api/`` (what scripts and the live
        parts read) ``{"error": message}`` as JSON."""
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
        if (path[len(root):] if root and path.startswith(root) else path).startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status_code)
        return self.render(request, "error.html", status_code=status_code, message=message)

    def failed(self, request: Request, exc: Exception) -> Response | None:
        """The page for an error of the read API or the client (:data:`ERROR_STATUS`), or
        None for any other (the caller re-raises it)."""
        for kinds, status_code in ERROR_STATUS:
            if isinstance(exc, kinds):
                return self.error(request, status_code, str(exc))
        return None


#: HTTP status of each error a page or an action may meet, first match: a missing job, a
#: move the status table refuses, a bad filter or value, Redis or MongoDB unreachable
#: (StoreUnavailable is a BrokerUnavailable).
ERROR_STATUS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    (JobNotFound, 404), (InvalidTransition, 409), ((ValueError, InvalidParams), 400), (BrokerUnavailable, 503))


def percent(share: float) -> str:
    """``share`` (0..1) as ``13%``, rounded half up as the live parts' Math.round does."""
    return f"{math.floor(100 * share + 0.5)}%"


def shown(value: object) -> object:
    """What a template prints of ``value``: text with the controls a terminal acts on
    (ESC, BEL...) escaped as ``\\x1b`` (runtime.redact.printable); anything else as is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return printable(value)
    return value


def segment(value: object) -> str:
    """``value`` percent-encoded as one URL path segment (``/`` too, unlike ``urlencode``);
    ``:`` and ``@`` stay as they are (allowed in a segment, RFC 3986 pchar; every job id has
    a ``:``, runtime.job.new_job_id, and the links are absolute paths, never read as a
    scheme)."""
    return quote(str(value), safe=":@")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, finalize=shown)
    env.filters.update(when=when, ago=ago, age=age, age_span=fmt_span, seconds=seconds, pretty=pretty, mask=mask,
                       segment=segment, percent=percent)
    return env
