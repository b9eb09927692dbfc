"""Commands around the queue: the demo, the embedded Redis server, the MongoDB store."""

from __future__ import annotations

from typing import Any

import click

from ..errors import ConfigError
from .app import Ctx, cli, handle_errors, out


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
    e = EmbeddedRedis(obj.settings().embedded_dir)
    url = e.url()
    click.echo(f"running at {url} (pid {e.pid()})" if url else "not running")


@embedded.command("stop")
@click.pass_obj
@handle_errors
def embedded_stop(obj: Ctx) -> None:
    """Stop the embedded server (its data is kept in .runtime/)."""
    from ..broker.embedded import EmbeddedRedis
    click.echo("stopped" if EmbeddedRedis(obj.settings().embedded_dir).stop() else "was not running")


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
    click.echo(f"indexes of {sync.store.jobs.full_name}: {', '.join(names)}")


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
    out(total) if as_json else click.echo(
        f"checked {total['checked']}, copied {total['written']} to MongoDB, queued again {total['adopted']} from MongoDB")


@mongo.command("attach")
@click.pass_obj
@handle_errors
def mongo_attach(obj: Ctx) -> None:
    """Make this Redis the owner of the job collection's history kept under its key prefix:
    for a Redis that replaced the one recorded there (its data lost). Its workers then
    queue again from MongoDB the waiting jobs this Redis does not have."""
    from ..store.mongo.deployment import attach
    client, sync = _mongo_sync(obj)
    store = sync.store
    deployment = client.call(attach, store.jobs, client.redis, store.prefix)
    click.echo(f"this Redis now owns {store.jobs.full_name} for key prefix {store.prefix!r} "
               f"(deployment {deployment})")


@mongo.command("migrate")
@click.pass_obj
@handle_errors
def mongo_migrate(obj: Ctx) -> None:
    """Rewrite job documents of the layout before (times as UNIX seconds) in the current
    one (times as dates), so that date queries and every page of `runtime jobs` match them."""
    client, sync = _mongo_sync(obj)
    done = client.call(sync.store.migrate)
    click.echo(f"rewrote {done} job documents of {sync.store.jobs.full_name}")
