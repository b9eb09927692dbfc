"""Concurrency caps and rate limits across all workers, declared as task options::

    @task(max_concurrency=2)                                # at most 2 running, fleet-wide
    @task(max_concurrency=1, concurrency_key="customer")    # at most 1 per params["customer"]
    @task(rate_limit=(100, 60))                             # at most 100 started per 60 s
    @task(rate_limit=(10, 1), concurrency_key="customer")   # ... per customer

Enforced by claim.lua (the pieces cap_* of _lib.lua) with the values the claiming
worker sends (:func:`caps_args`): a job over its cap is not claimed (no attempt charged)
but parked in ``{p}:park:{name}`` and put back at its old place in its queue when the
cap has room, so it never blocks the jobs behind it (a cancel takes it out of the park:
control.lua). ``name`` is the task path, or
``path=value`` with ``concurrency_key``: the param's value as text (1 and "1" share a
cap, True is "true"); a job without that param, or whose value is null, a list or an
object, shares the cap of the value "". A slot is held by a started job in ``{p}:cap:{name}`` and released lazily:
when the set looks full, members whose job is no longer started leave it (so the jobs of
a dead worker free their slots once the reaper requeues them). The rate is a sliding
window of start times, ``{p}:rate:{name}``. Prefetched jobs count as running. The names
of the caps claims have seen are kept in ``{p}:caps`` (``runtime queues`` shows them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .broker.registry import queue_names

#: Task options of caps and their meaning (registered in runtime.options).
CAP_OPTIONS = {
    "max_concurrency": "most jobs of the task running at once across all workers (per concurrency_key value)",
    "concurrency_key": "name of the param whose value gives each its own max_concurrency / rate_limit",
    "rate_limit": "(N, period_s): most jobs of the task started per period_s seconds (per concurrency_key value)",
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def cap_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is no good for cap option ``name`` (what it must be), or None."""
    if name == "max_concurrency" and not (_int(value) and value >= 1):
        return "an int >= 1"
    if name == "concurrency_key" and not (isinstance(value, str) and value.isidentifier()):
        return "a param name"
    if name == "rate_limit":
        ok = (isinstance(value, (tuple, list)) and len(value) == 2 and _int(value[0]) and value[0] >= 1
              and isinstance(value[1], (int, float)) and not isinstance(value[1], bool) and 0 < value[1] < 1e9)
        if not ok:
            return "(N, period_s): an int >= 1 and a number of seconds, more than 0 and under 1e9"
    return None


def key_problem(options: Mapping[str, Any], target: Any) -> str | None:
    """Why ``concurrency_key`` in task ``options`` is no good for ``target`` (the task's
    function or class), in one line, or None: it needs ``max_concurrency`` or
    ``rate_limit`` (alone it caps nothing), and must name a param of a function task
    (unless it takes ``**kwargs``; a class task's ``run`` takes any params)."""
    key = options.get("concurrency_key")
    if key is None:
        return None
    if not options.get("max_concurrency") and not options.get("rate_limit"):
        return f"concurrency_key {key!r} needs max_concurrency or rate_limit (alone it caps nothing)"
    import inspect
    if inspect.isclass(target) or not callable(target):
        return None
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return f"concurrency_key {key!r} names no param of the task (its params: {', '.join(params) or 'none'})"


def caps_args(tasks: Mapping[str, Any]) -> tuple[Any, ...]:
    """The caps of ``tasks`` (path -> runtime.tasks.TaskSpec) as claim.lua reads them:
    their number C, then per capped task: path, max running (0: none), key param ('':
    none), rate N (0: none), rate period in ms. ``()`` when no task is capped."""
    out: list[Any] = []
    n = 0
    for path, spec in sorted(tasks.items()):
        options = spec.options
        limit = options.get("max_concurrency") or 0
        rate = options.get("rate_limit") or (0, 0)
        if not limit and not rate[0]:
            continue
        n += 1
        out += (path, int(limit), options.get("concurrency_key") or "", int(rate[0]), max(1, round(rate[1] * 1000)))
    return (n, *out) if n else ()


def caps_listing(args: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    """:func:`caps_args`' tuple back as the options it came from, by task path:
    ``{"max_concurrency": n or None, "concurrency_key": param or None, "rate_limit":
    [N, period_s] or None}`` (a worker's registry entry, ``runtime workers``)."""
    out = {}
    for i in range(1, len(args), 5):
        path, limit, key, rate_n, rate_ms = args[i:i + 5]
        out[path] = {"max_concurrency": limit or None, "concurrency_key": key or None,
                     "rate_limit": [rate_n, rate_ms / 1000] if rate_n else None}
    return out


def caps_text(caps: dict[str, dict[str, Any]], running_paths: list[str]) -> str:
    """One line of :func:`caps_listing`'s caps with the jobs of each that a worker holds
    (``running_paths``: the task paths of its claimed jobs): "a.b (max 2, 1 held); c.d
    (rate 5/1s per customer, 0 held)"."""
    parts = []
    for path, c in caps.items():
        what = [f"max {c['max_concurrency']}"] if c.get("max_concurrency") else []
        if c.get("rate_limit"):
            what.append(f"rate {c['rate_limit'][0]}/{c['rate_limit'][1]:g}s")
        per = f" per {c['concurrency_key']}" if c.get("concurrency_key") else ""
        parts.append(f"{path} ({', '.join(what)}{per}, {running_paths.count(path)} held)")
    return "; ".join(parts)


def cap_counts(redis: Any, keys: Any) -> dict[str, dict[str, int]]:
    """Every cap seen by a claim (``{p}:caps:{queue}``), summed over the queues: name ->
    {"running": jobs holding a slot (ended ones not yet released lazily included),
    "parked": jobs waiting for one, "recent_starts": starts in its rate window}; caps with
    all three at 0 are left out. Two round trips after the queue names."""
    queues = queue_names(redis, keys)
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        pipe.smembers(keys.caps(q))
    pairs = [(q, str(n)) for q, names in zip(queues, pipe.execute() if queues else []) for n in sorted(names)]
    for q, n in pairs:
        pipe.scard(keys.cap(q, n))
        pipe.zcard(keys.park(q, n))
        pipe.zcard(keys.rate(q, n))
    replies = pipe.execute() if pairs else []
    out: dict[str, dict[str, int]] = {}
    for i, (_, n) in enumerate(pairs):
        row = out.setdefault(n, {"running": 0, "parked": 0, "recent_starts": 0})
        for field, value in zip(("running", "parked", "recent_starts"), replies[3 * i:3 * i + 3]):
            row[field] += int(value)
    return {n: row for n, row in sorted(out.items()) if any(row.values())}


def _names_of(redis: Any, keys: Any, queue: str, path: str) -> list[str]:
    """The caps of the task at ``path`` with parked jobs in ``queue`` (``{p}:parked:{queue}``)."""
    return [n for n in (str(x) for x in redis.smembers(keys.parked(queue)))
            if n == path or n.startswith(path + "=")]


def parked_cap(redis: Any, keys: Any, job_id: str, path: str, queue: str) -> str | None:
    """The cap (name, as ``runtime queues`` shows it) job ``job_id`` of task ``path`` in
    ``queue`` is parked under, or None when it is not parked. One round trip after the
    names."""
    names = _names_of(redis, keys, queue, path)
    pipe = redis.pipeline(transaction=False)
    for n in names:
        pipe.zscore(keys.park(queue, n), job_id)
    return next((n for n, sc in zip(names, pipe.execute() if names else []) if sc is not None), None)


def unpark(redis: Any, keys: Any, queue: str, name: str, ids: list[str] | None = None) -> list[str]:
    """Put the jobs parked under cap ``name`` in ``queue`` (all, or those of ``ids``) back
    in their ready queue at their old place, as claim.lua does when the cap has room;
    returns the ids moved. A job is moved only by whoever takes it out of the park set
    (ZREM), so one a claim unparks meanwhile is left to that claim."""
    pk = keys.park(queue, name)
    found: list[Any] = (redis.zrange(pk, 0, -1, withscores=True) if ids is None else
                        [(i, sc) for i, sc in zip(ids, redis.zmscore(pk, ids)) if sc is not None])
    moved = []
    for job_id, score in found:
        home = redis.hget(keys.job(job_id), "queue")
        if redis.zrem(pk, job_id) and home:  # a document gone is dropped, as claim.lua does
            redis.zadd(keys.ready(home), {job_id: score})
            if not redis.llen(keys.wake(home)):
                redis.lpush(keys.wake(home), "1")
            moved.append(str(job_id))
    return moved


def unpark_jobs(redis: Any, keys: Any, ids: Sequence[str]) -> list[str]:
    """The jobs of ``ids`` that were parked by a cap, put back in their queue (a requeue)."""
    moved = []
    for job_id in ids:
        path, queue = redis.hmget(keys.job(job_id), "path", "queue")
        name = parked_cap(redis, keys, job_id, str(path), str(queue)) if path and queue else None
        if name:
            moved += unpark(redis, keys, str(queue), name, [job_id])
    return moved


def unpark_uncapped(redis: Any, keys: Any, tasks: Mapping[str, Any]) -> list[str]:
    """Unpark the jobs parked under a cap that ``tasks`` (path -> TaskSpec, a worker's
    served tasks) no longer declare: no ``max_concurrency``/``rate_limit`` on the task any
    more, or a ``concurrency_key`` added or removed. No claim would ever take them back
    (claim.lua unparks only caps the claiming worker knows). Returns the ids moved."""
    moved = []
    for queue in queue_names(redis, keys):
        for name in sorted(str(n) for n in redis.smembers(keys.parked(queue))):
            path, keyed, _ = name.partition("=")
            spec = tasks.get(path)
            if spec is None:
                continue  # not ours to judge: a worker serving it does
            options = spec.options
            capped = bool(options.get("max_concurrency") or options.get("rate_limit"))
            if not capped or bool(options.get("concurrency_key")) != bool(keyed):
                moved += unpark(redis, keys, queue, name)  # its name leaves {p}:parked:{queue} at a claim
    return moved
