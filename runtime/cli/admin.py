"""Commands around the queue: the demo, the embedded Redis server, the MongoDB store."""

from __future__ import annotations

from typing import Any

import click

from ..errors import ConfigError, ExitCode, NotTheOwner, StoreUnavailable
from ..units import plural
from .app import Ctx, cli, echo, fail, handle_errors, out


@cli.command()
@click.option("-n", "--limit", type=int, help="only the first N files")
@click.option("-g", "--greenlets", default=10, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_obj
@handle_errors
def demo(obj: Ctx, limit: int | None, greenlets: int, as_json: bool) -> None:
    """Analyse every .py file of the installed standard library with a real worker."""
    from .demo import run_demo
    summary = run_demo(obj.settings(), limit=limit, greenlets=greenlets, quiet=as_json)
    if as_json:
        out(summary)


@cli.group()
def embedded() -> None:
    """The embedded redis-server under .runtime/ (used when no Redis URL is set)."""


@embedded.command("status")
@click.pass_obj
@handle_errors
def embedded_status(obj: Ctx) -> None:
    """Say whether the embedded server runs, and its URL."""
    from ..broker.embedded import EmbeddedRedis
    e = EmbeddedRedis(obj.settings().embedded_path)
    url = e.url()
    echo(f"running at {url} (pid {e.pid()})" if url else "not running")


def _gone(entry: dict[str, Any]) -> bool:
    """Is this registry entry's process on this host and dead (its entry not expired yet)?"""
    from ..process import alive, hostname
    return entry.get("host") == hostname() and entry.get("pid") is not None and not alive(entry["pid"], None)


@embedded.command("stop")
@click.option("--force", is_flag=True, help="stop it even while workers use it")
@click.pass_obj
@handle_errors
def embedded_stop(obj: Ctx, force: bool) -> None:
    """Stop the embedded server (its data is kept in .runtime/). Refused while workers are
    registered on it (exit 7), unless --force."""
    from ..broker.embedded import EmbeddedRedis
    e = EmbeddedRedis(obj.settings().embedded_path)
    if not force and e.url():
        live = [w for w in obj.client(middleware=False).reader.workers() if w.get("kind") != "supervisor"
                and not _gone(w)]
        if live:
            names = ", ".join(f"{w['host']} pid {w['pid']}" for w in live[:5]) + (", ..." if len(live) > 5 else "")
            n = len(live)
            fail(f"{n} {plural(n, 'worker uses', 'workers use')} the embedded Redis in {e.dir} ({names}): "
                 f"stop {plural(n, 'it', 'them')} first (Ctrl-C, SIGTERM), or give --force", ExitCode.NOT_ALLOWED)
    echo("stopped" if e.stop() else "was not running")


@cli.group()
def mongo() -> None:
    """The MongoDB job store (needs --mongodb or RUNTIME_MONGODB_URL)."""


def _mongo_sync(obj: Ctx) -> tuple[Any, Any]:
    client = obj.client()
    if client.mongo is None:
        raise ConfigError("no MongoDB URL: give --mongodb URL or set RUNTIME_MONGODB_URL")
    return client, client.mongo


@mongo.command("ensure-indexes")
@click.pass_obj
@handle_errors
def mongo_ensure_indexes(obj: Ctx) -> None:
    """Create every index of the job collection (those that exist are kept)."""
    client, sync = _mongo_sync(obj)
    names = client.call(sync.store.ensure_indexes)
    echo(f"indexes of {sync.store.jobs.full_name}: {', '.join(names)}")


@mongo.command("reconcile")
@click.option("--lag", "lag_s", type=float, default=0.0, show_default=True,
              help="leave changes younger than this many seconds to their writers")
@click.option("--full", is_flag=True,
              help="compare every job Redis holds, not only those changed since the last sweep "
                   "(refills a MongoDB that lost its data)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def mongo_reconcile(obj: Ctx, lag_s: float, full: bool, as_json: bool) -> None:
    """Repair Redis/MongoDB differences: copy to MongoDB what it lacks, queue again from
    MongoDB the jobs Redis lost (runs until nothing is left)."""
    client, sync = _mongo_sync(obj)
    total = client.call(sync.repair, lag_s, full)
    out(total) if as_json else echo(
        f"checked {total['checked']}, copied {total['written']} to MongoDB, queued again {total['adopted']} from MongoDB")


@mongo.command("attach")
@click.option("--force", is_flag=True, help="even while workers of the recorded Redis were seen alive")
@click.pass_obj
@handle_errors
def mongo_attach(obj: Ctx, force: bool) -> None:
    """Make this Redis the owner of the job collection's history kept under its key prefix:
    for a Redis that replaced the one recorded there, gone for good. Its workers then
    queue again from MongoDB the waiting jobs this Redis does not have. Refused (exit 2)
    while workers of the recorded Redis were seen alive lately, unless --force (they
    stop then)."""
    from ..store.mongo.deployment import attach
    client, sync = _mongo_sync(obj)
    store = sync.store
    deployment, changed = client.call(attach, store.jobs, client.redis, store.prefix, force)
    echo(f"this Redis {'now owns' if changed else 'owns already'} {store.jobs.full_name} for key prefix "
         f"{store.prefix!r} (deployment {deployment})")


@mongo.command("migrate")
@click.pass_obj
@handle_errors
def mongo_migrate(obj: Ctx) -> None:
    """Rewrite job documents of the layout before (times as UNIX seconds) in the current
    one (times as dates), so that date queries and every page of `runtime jobs` match them."""
    client, sync = _mongo_sync(obj)
    done = client.call(sync.store.migrate)
    echo(f"rewrote {done} job documents of {sync.store.jobs.full_name}")


def _info(obj: Ctx) -> dict[str, Any]:
    from importlib.metadata import version

    from ..broker.embedded import EmbeddedRedis
    from ..redact import mask
    from ..settings import CONFIG_FILE, project_root
    settings = obj.settings()
    problem: dict[str, str | None] = {"unreachable": None, "refused": None}  # why MongoDB is not read
    try:
        client = obj.client(middleware=False)
    except (StoreUnavailable, NotTheOwner) as exc:  # shown, with the Redis side all the same
        from ..client import Client
        client = Client(settings.replace(mongodb_url=None), middleware=False)
        problem[_why(exc)] = str(exc)
    reader = client.reader
    embedded = None
    if not settings.redis_url:
        e = EmbeddedRedis(settings.embedded_path)
        embedded = {"dir": str(e.dir), "pid": e.pid()}
    root = project_root()
    config = obj.config or (str(root / CONFIG_FILE) if root and (root / CONFIG_FILE).is_file() else None)
    live = reader.workers()
    server = reader.server()
    try:
        queues = reader.queues() if not any(problem.values()) else None
    except (StoreUnavailable, NotTheOwner) as exc:
        problem[_why(exc)], queues = str(exc), None
    if queues is None:  # MongoDB not read: the Redis side all the same, the job counts unknown
        queues = {"queues": client.call(client.broker.registry.queue_depths), "counts": None}
    store = getattr(client.store, "jobs", None)
    collection = store.full_name if store is not None else f"{settings.mongodb_database or '?'}.{settings.mongodb_collection}"
    return {
        "version": version("runtime"), "redis": server, "embedded": embedded,
        "prefix": settings.key_prefix, "config_file": config,
        "mongodb": None if not settings.mongodb_url else {
            "url": mask(settings.mongodb_url), "collection": collection, **problem},
        "workers": sum(e.get("kind") != "supervisor" for e in live),
        "supervisors": sum(e.get("kind") == "supervisor" for e in live),
        **queues,
    }


def _why(exc: Exception) -> str:
    """The key of ``runtime info``'s mongodb object that ``exc`` fills."""
    return "refused" if isinstance(exc, NotTheOwner) else "unreachable"


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def info(obj: Ctx, as_json: bool) -> None:
    """Which Redis (URL or embedded folder) and MongoDB this folder's commands use, the
    server's version and memory, the key prefix, live workers and queues. A MongoDB that
    cannot be reached is shown as such (job counts unknown), exit code 0 all the same."""
    data = _info(obj)
    if as_json:
        out(data)
        return
    from ..units import fmt_bytes
    r, e = data["redis"], data["embedded"]
    limit = fmt_bytes(r["maxmemory_bytes"]) if r["maxmemory_bytes"] else "no limit"
    echo(f"runtime   {data['version']}")
    echo(f"redis     {r['url']}" + (f"  (embedded: {e['dir']}, pid {e['pid']})" if e else ""))
    echo(f"server    Redis {r['version']} ({r['role']}), {fmt_bytes(r['used_memory_bytes'])} used, "
         f"maxmemory {limit} ({r['maxmemory_policy']})")
    echo(f"prefix    {data['prefix']}")
    echo(f"config    {data['config_file'] or 'none (defaults and RUNTIME_* variables)'}")
    m = data["mongodb"]
    echo(f"mongodb   {m['url']} ({m['collection']})" + (f": unreachable ({m['unreachable']})" if m["unreachable"] else "")
         + (f": not this deployment's ({m['refused']})" if m["refused"] else "")
         if m else "mongodb   none (job documents in Redis only)")
    echo(f"workers   {data['workers']} alive" + (f" under {data['supervisors']} supervisors" if data["supervisors"] else ""))
    queues = ", ".join(f"{q} {d['ready']} ready, {d['delayed']} delayed" for q, d in data["queues"].items())
    echo(f"queues    {queues or 'none'}")
    counts = data["counts"]
    echo("jobs      " + ("unknown (MongoDB not read)" if counts is None
                         else ", ".join(f"{s} {n}" for s, n in counts.items() if n) or "none"))
