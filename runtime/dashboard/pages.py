"""The pages (GET, HTML) and their JSON twins under ``/api`` (what the live parts poll).

Every page reads through the read API (runtime.client.reader.Reader) and answers from
the store's indexes and cursors; a filter the indexes cannot answer reads a bounded
number of documents per page (runtime.client.search).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..client.sorting import SORTS, WINDOW, check_sort
from ..job import Job
from ..status import FINAL, Status
from ..unique import looks_like_id
from .dash import Dash
from .jobview import job_context, live_state
from .operations import ACTIONS, APPLIES, Operations
from .present import age, filter_query, job_filter, repeated, when
from .workerview import workers_context

Handler = Callable[[Request], Response]


def guarded(dash: Dash, fn: Callable[[Dash, Request], Response]) -> Handler:
    """``fn`` with the read API's errors as pages (Dash.failed: JobNotFound 404, a bad
    filter 400, an unreachable Redis or MongoDB 503); a query naming a parameter twice is
    refused (400) before it runs."""
    @functools.wraps(fn)
    def handler(request: Request) -> Response:
        twice = repeated(request.query_params.multi_items())
        if twice:
            return dash.error(request, 400, twice)
        try:
            return fn(dash, request)
        except Exception as exc:
            page = dash.failed(request, exc)
            if page is None:
                raise
            return page
    return handler


def overview(dash: Dash, request: Request) -> Response:
    reader = dash.client.reader
    queues = reader.queues(live_counts=True)
    workers = reader.workers()
    groups, scanned = reader.failures(budget=500)
    return dash.render(request, "overview.html", counts=queues["counts"], history=dash.client.store.live
                       is not dash.client.store, queues=queue_rows(queues, workers),
                       workers=[w for w in workers if w.get("kind") == "worker"], events=reader.events(10),
                       groups=groups[:5], scanned=scanned, rates=reader.rates())


def queue_rows(queues: dict[str, Any], workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per queue: ready, delayed, when its oldest waiting job became due, paused,
    and how many live workers serve it."""
    rows = []
    for name, depth in queues["queues"].items():
        serving = sum(1 for w in workers if w.get("kind") == "worker" and name in w.get("queues", ()))
        rows.append({"name": name, **depth, "workers": serving})
    return rows


def overview_api(dash: Dash, request: Request) -> Response:
    """What the overview and queues pages update live: ``{"counts": {status: n},
    "workers_alive": n, "queues": [{"name", "ready", "delayed", "oldest" (an age for a
    person), "workers", "state"}]}``."""
    reader = dash.client.reader
    queues, workers = reader.queues(live_counts=True), reader.workers()
    rows = [{"name": q["name"], "ready": q["ready"], "delayed": q["delayed"], "oldest": age(q["oldest_due_at"]),
             "workers": q["workers"], "state": "paused" if q["paused"] else "active"}
            for q in queue_rows(queues, workers)]
    return JSONResponse({"counts": queues["counts"], "queues": rows,
                         "workers_alive": sum(1 for w in workers if w.get("kind") == "worker")})


#: Most jobs one page lists.
MAX_LIMIT = 500


def jobs(dash: Dash, request: Request) -> Response:
    query = dict(request.query_params)
    f = job_filter(query, dash.redact)
    sort = check_sort(query.get("sort") or "changed")
    limit = _number(query, "limit", 50, f"a number of jobs, 1 to {MAX_LIMIT}", MAX_LIMIT)
    window = _number(query, "window", WINDOW, f"the newest jobs a sort without an index orders, 1 to {WINDOW}")
    store = dash.client.store
    page = dash.client.reader.search(f, limit=limit, before=query.get("before") or None, sort=sort,
                                     within=query.get("within") or None, count=store.live is store, window=window)
    # a sort over a window says so in its links too: a shared link shows what it orders;
    # every link keeps the page size asked for
    size = {"limit": str(limit) if query.get("limit") else None,
            "window": str(window) if page.window is not None or query.get("window") else None}
    kept = {"sort": sort if sort != "changed" else None, **size}
    return dash.render(request, "jobs.html", page=page, query=query, statuses=[s.value for s in Status],
                       sorts={k: label for k, (label, _) in SORTS.items()}, sort=sort, window=window, limit=limit,
                       next_query=filter_query(query, before=page.next, within=page.within, **kept)
                       if page.next else None,
                       sort_query=filter_query(query, **size), first_query=filter_query(query, **kept),
                       filter_query=filter_query(query), filtered=bool(f.to_dict()),
                       bulk_actions=[a for a in ACTIONS if f.status is None or f.status in APPLIES[a]])


def _number(query: dict[str, str], name: str, default: int, what: str, most: int = WINDOW) -> int:
    """The whole number ``query[name]`` (``default`` when absent), 1 to ``most``. Raises
    ValueError saying ``what`` it takes."""
    try:
        n = int(query.get(name) or default)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise ValueError(f"bad {name} {query.get(name)!r}: give {what}")
    return n


def job(dash: Dash, request: Request) -> Response:
    view = dash.client.reader.job(request.path_params["job_id"])
    return dash.render(request, "job.html", **job_context(dash, view))


def job_api(dash: Dash, request: Request) -> Response:
    """What a job's page polls (jobview.live_state): the job without its history, and its
    stack from its worker's entry (two round trips while it runs, one after)."""
    return JSONResponse(live_state(dash, dash.client.reader.live_job(request.path_params["job_id"])))


#: Most jobs one live poll of a list asks about.
MAX_STATES = 200


def states_api(dash: Dash, request: Request) -> Response:
    """``[{"id", "status", "progress"}]`` of the ids in ``?ids=a,b`` (at most MAX_STATES)."""
    ids = [i for i in (request.query_params.get("ids") or "").split(",") if looks_like_id(i)][:MAX_STATES]
    return JSONResponse(dash.client.reader.states(ids) if ids else [])


def artifact(dash: Dash, request: Request) -> Response:
    """An artifact as its middleware renders it in HTML (a pyinstrument profile: its own
    page and script), served sandboxed: a unique origin with no access to the
    dashboard, its cookies or its pages."""
    j: Job = dash.client.reader.job(request.path_params["job_id"]).job
    name = request.path_params["name"]
    if name not in j.artifacts:
        return dash.error(request, 404, f"job {j.id} has no artifact {name!r}")
    try:
        text = dash.client.middleware.render_artifact(name, j.artifacts[name], html=True)
    except KeyError:
        return dash.error(request, 404, f"no configured middleware renders artifact {name!r}")
    text = text.replace("<head>", "<head>" + _STORAGE_SHIM, 1) if "<head>" in text else _STORAGE_SHIM + text
    csp = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "img-src data:; font-src data:; frame-ancestors 'self'")
    return Response(text, media_type="text/html", headers={"content-security-policy": csp})


#: A sandboxed frame (an opaque origin) has no localStorage: reading it throws, which stops
#: pyinstrument's renderer. This gives the frame an in-memory one, before its script runs.
_STORAGE_SHIM = """<script>(function () {
  try { return window.localStorage && undefined; } catch (e) { /* sandboxed: none */ }
  function store() {
    var m = {};
    return {getItem: function (k) { return Object.prototype.hasOwnProperty.call(m, k) ? m[k] : null; },
            setItem: function (k, v) { m[k] = String(v); }, removeItem: function (k) { delete m[k]; },
            clear: function () { m = {}; }, key: function (i) { return Object.keys(m)[i] || null; },
            get length() { return Object.keys(m).length; }};
  }
  ["localStorage", "sessionStorage"].forEach(function (name) {
    Object.defineProperty(window, name, {value: store(), configurable: true});
  });
}());</script>"""


def failures(dash: Dash, request: Request) -> Response:
    by_worker = request.query_params.get("by") == "worker"
    queue = request.query_params.get("queue") or None
    groups, scanned = dash.client.reader.failures(budget=1000, by_worker=by_worker, queue=queue)
    return dash.render(request, "failures.html", groups=groups, scanned=scanned, by_worker=by_worker,
                       queue=queue, final=[s.value for s in FINAL])


def queues(dash: Dash, request: Request) -> Response:
    reader = dash.client.reader
    return dash.render(request, "queues.html", queues=queue_rows(reader.queues(live_counts=True), reader.workers()))


def workers(dash: Dash, request: Request) -> Response:
    return dash.render(request, "workers.html", **workers_context(dash.client.reader, dash.client.settings))


def operation(dash: Dash, request: Request) -> Response:
    op = Operations(dash.client).get(request.path_params["op_id"])
    if op is None:
        return dash.error(request, 404, "no such operation (they are kept 7 days)")
    return dash.render(request, "operation.html", op=op)


def operation_api(dash: Dash, request: Request) -> Response:
    """What an operation's page polls: Operations.get, and ``"ended"``: its end time as the
    page shows it (``-`` while it runs)."""
    op = Operations(dash.client).get(request.path_params["op_id"])
    if op is None:
        return JSONResponse({"error": "no such operation"}, status_code=404)
    return JSONResponse({**op, "ended": when(op["ended_at"])})


def operations(dash: Dash, request: Request) -> Response:
    return dash.render(request, "operations.html", ops=Operations(dash.client).recent(50))


def favicon(dash: Dash, request: Request) -> Response:
    """No icon (204): a browser's request for one is answered, not a 404 page."""
    return Response(status_code=204, headers={"cache-control": "max-age=86400"})


def routes(dash: Dash) -> list[Route]:
    def r(path: str, fn: Callable[[Dash, Request], Response], name: str) -> Route:
        return Route(path, guarded(dash, fn), methods=["GET"], name=name)
    return [r("/", overview, "overview"), r("/favicon.ico", favicon, "favicon"),
            r("/jobs", jobs, "jobs"), r("/jobs/{job_id}", job, "job"),
            r("/jobs/{job_id}/artifacts/{name}", artifact, "artifact"), r("/api/jobs/{job_id}", job_api, "job_api"),
            r("/api/states", states_api, "states_api"), r("/api/overview", overview_api, "overview_api"),
            r("/failures", failures, "failures"), r("/queues", queues, "queues"), r("/workers", workers, "workers"),
            r("/operations", operations, "operations"), r("/operations/{op_id}", operation, "operation"),
            r("/api/operations/{op_id}", operation_api, "operation_api")]
