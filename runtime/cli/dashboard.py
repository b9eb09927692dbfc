"""``runtime dashboard``: the web UI (runtime.dashboard) served by uvicorn."""

from __future__ import annotations

import click

from ..errors import ConfigError, ExitCode
from .app import Ctx, cli, echo, fail, handle_errors

#: Largest request line and headers uvicorn reads (its default is 16 KiB): the app then
#: answers 414 for a URL over runtime.dashboard.app.MAX_URL_BYTES.
MAX_REQUEST_HEAD_BYTES = 1 << 20


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind; one that is not loopback needs --token or --user (or --insecure-no-auth)")
@click.option("--port", default=5555, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="show everything, change nothing: actions are hidden and refused")
@click.option("--token", envvar="RUNTIME_DASHBOARD_TOKEN", metavar="TOKEN",
              help="accept this token (HTTP Basic password, any user name; or Authorization: Bearer) [env RUNTIME_DASHBOARD_TOKEN]")
@click.option("--user", "users", multiple=True, envvar="RUNTIME_DASHBOARD_USERS", metavar="NAME:HASH",
              help="accept this user (HTTP Basic), HASH from --hash-password; repeatable [env RUNTIME_DASHBOARD_USERS, space-separated]")
@click.option("--insecure-no-auth", is_flag=True,
              help="serve a non-loopback address without credentials: anyone who reaches it sees and changes every job")
@click.option("--redact", metavar="REGEX", envvar="RUNTIME_DASHBOARD_REDACT",
              help="params keys whose values are hidden [default: password, secret, token, api key, auth...]")
@click.option("--sentry-link", metavar="URL", envvar="RUNTIME_DASHBOARD_SENTRY_LINK",
              help="link a job's Sentry event: a URL with {event_id}, e.g. https://sentry.example/organizations/o/issues/?query={event_id}")
@click.option("--allowed-host", "allowed_hosts", multiple=True, envvar="RUNTIME_DASHBOARD_ALLOWED_HOSTS",
              metavar="NAME", help="also answer requests for this host name (Host header; besides localhost, "
              "127.0.0.1, ::1 and --host): the name it is reached by, e.g. behind a proxy; *.example.com for "
              "subdomains; repeatable [env RUNTIME_DASHBOARD_ALLOWED_HOSTS, space-separated]")
@click.option("--forwarded-allow-ips", metavar="IPS", envvar="RUNTIME_DASHBOARD_FORWARDED_ALLOW_IPS",
              help="trust X-Forwarded-For/-Proto from these proxy addresses (comma-separated; e.g. 127.0.0.1 "
              "behind a local reverse proxy), so histories record the client's address [default: trust none; "
              "env RUNTIME_DASHBOARD_FORWARDED_ALLOW_IPS]")
@click.option("--hash-password", is_flag=True, help="ask for a password, print the HASH for --user NAME:HASH, exit")
@click.pass_obj
@handle_errors
def dashboard(obj: Ctx, host: str, port: int, read_only: bool, token: str | None, users: tuple[str, ...],
              insecure_no_auth: bool, redact: str | None, sentry_link: str | None, allowed_hosts: tuple[str, ...],
              forwarded_allow_ips: str | None, hash_password: bool) -> None:
    """Serve the web dashboard (jobs, failures, queues, workers, actions) at http://HOST:PORT/."""
    try:
        from ..dashboard.security import Auth, check_bind, default_hosts
        from ..dashboard.security import hash_password as make_hash
    except ModuleNotFoundError as exc:
        fail(f"the dashboard needs its extra ({exc.name} is missing): pip install 'runtime[dashboard]'", ExitCode.USAGE)
    if hash_password:
        echo(make_hash(click.prompt("password", hide_input=True, confirmation_prompt=True)))
        return
    auth = Auth.parse(token, users)
    check_bind(host, auth, insecure_no_auth)
    if insecure_no_auth and not auth.configured:
        echo(f"warning: --insecure-no-auth: no credentials are asked; anyone who can reach {host}:{port} can "
             "see every job and act on them (requeue, cancel, abort, move, pause queues)", err=True)
    import re

    import uvicorn

    from ..dashboard import create_app
    try:
        app = create_app(obj.settings(), read_only=read_only, auth=auth, redact=redact, sentry_link=sentry_link,
                         allowed_hosts=default_hosts(host, " ".join(allowed_hosts).split()))
    except re.error as exc:
        raise ConfigError(f"--redact: not a regular expression: {exc}") from None
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=bool(forwarded_allow_ips),
                            # a request line up to this size reaches the app, which refuses a
                            # long URL with 414 (not a dropped connection)
                            h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
                            forwarded_allow_ips=forwarded_allow_ips or "")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    echo(f"dashboard: http://{shown}:{port}/" + (" (read-only)" if read_only else "")
         + ("" if auth.configured else " (no credentials asked)"))
    server.run()
