"""A bulk action's dry run (``GET /bulk``): how many jobs of the filter the action would
change, and how many of each other status it would skip, counted cheaply and bounded.

- On the Redis store, a filter of status, queue and changed since/until only is counted
  from the status indexes (one ZCOUNT per queue and status: the index's score is the
  last change), exactly, whatever the number of jobs.
- Any other filter is counted on the documents read, at most :data:`READ_BUDGET` of
  them: past that the page says "at least N" (the operation, which takes its ids in a
  thread of its own, takes them all, up to 100,000: Reader.matching_ids).
- At most :data:`MAX_DRY_RUNS` count at once in a process; another is refused (429).
- It is a GET a link starts, so a page of another site could start it too (an image tag):
  a request a browser marks as from another site (``Sec-Fetch-Site`` cross-site or
  same-site: another port of the same host is same-site) is refused (403) before anything
  is read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..client import Client
from ..client.search import JobFilter
from ..status import Status
from .dash import Dash
from .operations import ACTIONS, APPLIES
from .present import FILTER_NAMES, filter_query, job_filter, repeated

#: Most job documents one dry run reads (the trial's figure: about 0.25 ms each, so some
#: 2.5 s at most); an index count reads none.
READ_BUDGET = 10_000
#: Dry runs counting at once in one dashboard process.
MAX_DRY_RUNS = 2
#: Jobs the dry run lists by id (the newest of those the action would change).
SAMPLE = 20
#: The ``Sec-Fetch-Site`` values of a request from this dashboard's own pages, or typed
#: in the address bar (``none``); a request without the header (curl, an older browser)
#: is served too.
SAME_ORIGIN = ("same-origin", "none")
#: Filters the Redis status indexes answer: by queue and status, scored by last change.
_INDEXED = frozenset({"status", "queue", "since", "until"})


@dataclass
class Tally:
    """What a dry run counted: jobs by status, whether that is all of them (False: it
    stopped at READ_BUDGET documents: at least that many), and the newest ids of those
    the action would change (at most SAMPLE)."""

    by_status: Counter[str] = field(default_factory=Counter)
    complete: bool = True
    sample: list[str] = field(default_factory=list)


def tally(client: Client, f: JobFilter, applies: frozenset[Status], budget: int = READ_BUDGET) -> Tally:
    """The jobs of ``f`` by status (``applies``: the statuses the action changes, for the
    sample): from the indexes where they answer ``f``, else reading at most ``budget``
    documents. Raises ValueError for a bad filter, BrokerUnavailable."""
    store = client.store
    if store.live is store and set(f.to_dict()) <= _INDEXED:
        return client.call(_from_indexes, client, f, applies)
    out = Tally()
    before: str | None = None
    read = 0
    while read < budget:
        page = client.reader.search(f, limit=1000, before=before, budget=min(budget - read, 10_000), count=False)
        read += page.scanned if page.scanned is not None else len(page.jobs)
        out.by_status.update(j.status.value for j in page.jobs)
        out.sample += [j.id for j in page.jobs if j.status in applies][:SAMPLE - len(out.sample)]
        if page.next is None:
            return out
        before = page.next
    out.complete = False
    return out


def _from_indexes(client: Client, f: JobFilter, applies: frozenset[Status]) -> Tally:
    """Exact counts of a filter of status, queue and since/until, from the status indexes
    of the Redis store (ZCOUNT between since and until: O(log n) each); the sample is the
    newest SAMPLE of the statuses ``applies`` keeps."""
    live = client.store.live
    queues = [f.queue] if f.queue else live.queue_names()
    statuses = [f.status] if f.status else [s.value for s in Status]
    low, high = f.since if f.since is not None else "-inf", f.until if f.until is not None else "+inf"
    pipe = client.redis.pipeline(transaction=False)
    for q in queues:
        for s in statuses:
            pipe.zcount(live.keys.status(q, s), low, high)
    counts = pipe.execute() if queues else []
    out = Tally()
    for i, n in enumerate(counts):
        if n:
            out.by_status[statuses[i % len(statuses)]] += int(n)
    wanted = [s for s in statuses if Status(s) in applies]
    if wanted:
        newest = live.list_jobs(queue=f.queue, statuses=wanted, limit=SAMPLE,
                                before=None if f.until is None else (f.until, "~"))
        out.sample = [j.id for j in newest if f.since is None or (j.changed_at or 0.0) >= f.since]
    return out


def preview(dash: Dash) -> Callable[[Request], Awaitable[Response]]:
    """GET: how many jobs the filter's bulk action would change now (a dry run): those
    whose status the action applies to (:data:`APPLIES`), and how many of each other
    status it would skip; and the form that starts it (none when it would change none).
    403 read-only or from another site, 429 past MAX_DRY_RUNS, 400 a bad action or filter."""
    running = [0]

    async def handler(request: Request) -> Response:
        if dash.read_only:
            return dash.error(request, 403, "this dashboard is read-only (--read-only): actions are refused")
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in SAME_ORIGIN:
            return dash.error(request, 403, f"refused: a dry run is started from this dashboard's own pages "
                              f"(this request came from a {site[:20]} page)")
        twice = repeated(request.query_params.multi_items())
        if twice:
            return dash.error(request, 400, twice)
        query = dict(request.query_params)
        action = query.get("action", "")
        try:
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
            f = job_filter(query, dash.redact)
            if not f.to_dict():
                raise ValueError("a bulk action needs at least one filter")
        except ValueError as exc:
            return dash.error(request, 400, str(exc))
        if running[0] >= MAX_DRY_RUNS:
            return dash.error(request, 429, f"{MAX_DRY_RUNS} dry runs are counting already: try again in a moment")
        running[0] += 1
        try:
            counted = await run_in_threadpool(tally, dash.client, f, APPLIES[action])
        finally:
            running[0] -= 1
        return _page(dash, request, action, query, f, counted)
    return handler


def _page(dash: Dash, request: Request, action: str, query: dict[str, str], f: JobFilter,
          counted: Tally) -> Response:
    fields = {k: query[k] for k in FILTER_NAMES if query.get(k)}
    for name, value in (("since", f.since), ("until", f.until)):  # "1h" is taken as of now, once
        if value is not None:
            fields[name] = f"{value:.6f}"
    applies = APPLIES[action]
    changes = sum(n for s, n in counted.by_status.items() if Status(s) in applies)
    skipped = [(s, n) for s, n in counted.by_status.items() if Status(s) not in applies]
    return dash.render(request, "bulk.html", action=action, count=sum(counted.by_status.values()),
                       complete=counted.complete, budget=READ_BUDGET, fields=fields,
                       filter_json=json.dumps(fields, sort_keys=True), filter_query=filter_query(query),
                       changes=changes, skipped=sorted(skipped, key=lambda kv: (-kv[1], kv[0])),
                       applies=[s.value for s in Status if s in applies], sample=counted.sample)
