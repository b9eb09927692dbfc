"""Actions: requeue, cancel, abort or move (queue, priority) one job; the same by the current filter (a dry-run
count first: runtime.dashboard.dryrun; then a tracked operation: runtime.dashboard.operations).

Every state-changing request is a POST carrying the form's CSRF token
(runtime.dashboard.security.Csrf) and an ``Origin`` of this host (or, without one, a
``Referer`` of this host); ``--read-only`` refuses them all (403). Each touched job's history records
who asked and from where (``by``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client.known import unknown_queue
from ..client.limits import PRIORITY_RANGE
from ..queuenames import queue_name_problem
from .dash import Dash
from .dryrun import preview
from .operations import ACTIONS, Operations
from .present import FILTER_NAMES, job_filter


def who(request: Request) -> str:
    """``dashboard user NAME from ADDRESS``: recorded in each touched job's history."""
    return f"dashboard user {getattr(request.state, 'user', '?')} from {getattr(request.state, 'client', '?')}"


def refusal(dash: Dash, request: Request, form: Mapping[str, Any] | None) -> Response | None:
    """The response refusing this state change, or None when it may go on: read-only
    (403); a request not from this dashboard's own pages (403): its ``Origin`` must be
    this scheme and host (``null``, an opaque origin, is refused), or, without one, its
    ``Referer`` must be a page of this scheme and host; neither is refused; a missing or
    wrong CSRF token (403). The scheme is the request's as the server saw it (behind
    a proxy trusted by --forwarded-allow-ips: its X-Forwarded-Proto)."""
    if dash.read_only:
        return dash.error(request, 403, "this dashboard is read-only (--read-only): actions are refused")
    here = (request.url.scheme, request.headers.get("host"))  # the scheme as the server, or its trusted proxy, saw it
    origin = request.headers.get("origin")
    referer = request.headers.get("referer")
    if origin is not None:
        same = origin != "null" and _site(origin) == here
    else:
        same = referer is not None and _site(referer) == here
    if not same or request.headers.get("sec-fetch-site") == "cross-site":
        return dash.error(request, 403, "refused: the request came from another site (or named none: a POST "
                          "needs an Origin, or a Referer, of this dashboard)")
    token = form.get("csrf") if form is not None else None
    if not dash.csrf.valid(request.cookies.get("rt_csrf"), token if isinstance(token, str) else None):
        return dash.error(request, 403, "refused: missing or invalid CSRF token (reload the page and try again)")
    return None


def _site(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of an http(s) ``url``, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return (parts.scheme, parts.netloc) if parts.scheme in ("http", "https") else None


def move_target(form: Mapping[str, Any]) -> dict[str, Any]:
    """``{"queue": name or None, "priority": int or None}`` of a move form's ``to_queue``
    and ``to_priority`` (named apart from the filter's ``queue``, which a bulk form also
    carries). Raises ValueError, saying what to give, for a queue that is not a queue name
    (runtime.queuenames), a priority that is not an integer in PRIORITY_RANGE, or neither
    given: checked before anything moves, as the client checks a single move."""
    queue = str(form.get("to_queue") or "").strip() or None
    text = str(form.get("to_priority") or "").strip()
    low, high = PRIORITY_RANGE
    try:
        priority = int(text) if text else None
    except ValueError:
        priority = low - 1
    if priority is not None and not low <= priority <= high:
        raise ValueError(f"priority must be an integer from {low} to {high}, got {text[:40]!r}")
    if queue is not None and (problem := queue_name_problem(queue)):
        raise ValueError(problem)
    if queue is None and priority is None:
        raise ValueError("give a queue and/or a priority to move to")
    return {"queue": queue, "priority": priority}


async def unknown_target(dash: Dash, target: Mapping[str, Any] | None) -> str | None:
    """Why a move's target queue (``target["queue"]``, of :func:`move_target`) is refused
    as unknown (runtime.client.known: no job, worker or setting names it, nor is it paused),
    naming the closest known queue; None when it may be moved to (or none is given). The
    dashboard has no way to force it: a queue becomes known when a worker serves it or
    the settings name it."""
    queue = (target or {}).get("queue")
    if not queue:
        return None
    unknown = await run_in_threadpool(unknown_queue, dash.client, queue)
    return f"{unknown} (to move jobs there, start a worker on it or name it in the settings' queues first)" \
        if unknown else None


def dry_run_filter(text: str | None) -> dict[str, str]:
    """The filter a dry run counted (its form's ``filter`` field: a JSON object of URL
    filter names to values), and nothing else of the form. Raises ValueError when it is
    missing or not such an object."""
    try:
        raw = json.loads(text or "")
    except ValueError:
        raise ValueError("the form has no dry-run filter: start from the jobs page's bulk button") from None
    if not isinstance(raw, dict) or not all(k in FILTER_NAMES and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("the form's dry-run filter is not one the dashboard made: start again from the jobs page")
    return raw


def one_job(dash: Dash) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        form = await request.form()
        refused = refusal(dash, request, form)
        if refused is not None:
            return refused
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        if action not in ACTIONS:
            return dash.error(request, 404, f"no action {action!r}")
        fn = getattr(dash.client, action)
        try:
            extra = move_target(form) if action == "move" else {}
            unknown = await unknown_target(dash, extra)
            if unknown:
                return dash.error(request, 404, unknown)
            # a move to another queue gives the job a new id there: its page is the new one's
            now = await run_in_threadpool(lambda: fn(job_id, by=who(request), **extra))
            job_id = now[0] if now else job_id
        except Exception as exc:
            page = dash.failed(request, exc)
            if page is None:
                raise
            return page
        return RedirectResponse(f"{request.scope.get('root_path', '')}/jobs/{job_id}", status_code=303)
    return handler


def queue_action(dash: Dash) -> Callable[[Request], Awaitable[Response]]:
    """POST: pause or resume a queue (workers honour it within a heartbeat): 400 for a bad
    name, 404 for one no job, worker or setting names (runtime.client.known)."""
    async def handler(request: Request) -> Response:
        form = await request.form()
        refused = refusal(dash, request, form)
        if refused is not None:
            return refused
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("pause", "resume"):
            return dash.error(request, 404, f"no queue action {action!r}")
        problem = queue_name_problem(name)
        if problem:
            return dash.error(request, 400, problem)
        unknown = await run_in_threadpool(unknown_queue, dash.client, name)
        if unknown:  # the CLI's rule: a typo does not pause a queue nothing uses
            hint = f"`runtime queues pause {name} --force` pauses it anyway" if action == "pause" else \
                "and it is not paused: nothing to resume"
            return dash.error(request, 404, f"{unknown} ({hint})")
        registry = dash.client.broker.registry
        await run_in_threadpool(dash.client.call, getattr(registry, action), name)
        return RedirectResponse(f"{request.scope.get('root_path', '')}/queues", status_code=303)
    return handler


def bulk(dash: Dash) -> Callable[[Request], Awaitable[Response]]:
    """POST: start the bulk action of the form's filter as an operation; to its page."""
    async def handler(request: Request) -> Response:
        form = await request.form()
        refused = refusal(dash, request, form)
        if refused is not None:
            return refused
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        action = values.get("action", "")
        try:
            f = job_filter(dry_run_filter(values.get("filter")), dash.redact)
            target = move_target(values) if action == "move" else None
            unknown = await unknown_target(dash, target)
            if unknown:
                return dash.error(request, 404, unknown)
            op_id = await run_in_threadpool(Operations(dash.client).start, action, f, who(request), target)
        except ValueError as exc:
            return dash.error(request, 400, str(exc))
        return RedirectResponse(f"{request.scope.get('root_path', '')}/operations/{op_id}", status_code=303)
    return handler


def routes(dash: Dash) -> list[Route]:
    return [Route("/jobs/{job_id}/{action}", one_job(dash), methods=["POST"], name="job_action"),
            Route("/queues/{name:path}/{action}", queue_action(dash), methods=["POST"], name="queue_action"),
            Route("/bulk", preview(dash), methods=["GET"], name="bulk_preview"),
            Route("/bulk", bulk(dash), methods=["POST"], name="bulk")]
