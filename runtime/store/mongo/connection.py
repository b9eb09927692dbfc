"""Connecting to MongoDB, and what its errors mean to runtime: unreachable (retry later;
StoreUnavailable, CLI exit code 4) or bad configuration (ConfigError, exit code 2)."""

from __future__ import annotations

import re
from typing import Any

from ...errors import ConfigError, StoreUnavailable
from ...redact import mask
from ...settings import Settings

#: How often pymongo's monitor checks each server, seconds (its default, 10 s, would let
#: a worker claim for 10 s after MongoDB went away; a check is one small command).
HEARTBEAT_S = 1.0


def mongo_client(settings: Settings) -> Any:
    """A pymongo MongoClient for ``settings`` with its timeouts (no I/O yet): server
    selection ``mongodb_select_timeout_s`` (at most ``mongodb_timeout_s``), connect and
    socket ``mongodb_timeout_s`` (the monitor's checks time out on the connect timeout:
    a busy server must not be taken for a lost one); the monitor checks each server
    every HEARTBEAT_S.

    Raises ConfigError without a URL or without pymongo (``pip install pymongo``), and for
    a URL pymongo refuses or would only warn about (an unknown option, a bad value: it
    would go on without them), or whose ``w`` is neither a number nor ``majority``: one
    line, ``bad mongodb_url: ...``.
    """
    if not settings.mongodb_url:
        raise ConfigError("no MongoDB URL: set mongodb_url, RUNTIME_MONGODB_URL or --mongodb")
    try:
        import pymongo
    except ImportError:
        raise ConfigError("the MongoDB job store needs pymongo: pip install pymongo") from None
    import warnings
    ms = int(settings.mongodb_timeout_s * 1000)
    select_ms = int(min(settings.mongodb_select_timeout_s, settings.mongodb_timeout_s) * 1000)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            client: Any = pymongo.MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=select_ms,
                                              connectTimeoutMS=ms, socketTimeoutMS=ms,
                                              heartbeatFrequencyMS=int(HEARTBEAT_S * 1000), appname="runtime",
                                              tz_aware=True)
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
        raise (translate(exc, settings.mongodb_url) or ConfigError(f"bad mongodb_url: {short_error(exc)}")) from None
    problems = url_problems(settings.mongodb_url, [str(w.message) for w in warned
                                                   if issubclass(w.category, UserWarning)])
    w = client.write_concern.document.get("w")
    if isinstance(w, str) and w != "majority":
        problems.append(f"w must be a number or 'majority', got {w!r}")
    if problems:
        client.close()
        raise ConfigError(f"bad mongodb_url: {'; '.join(problems)}")
    return client


def url_problems(url: str, warned: list[str]) -> list[str]:
    """pymongo's warnings about the options of ``url`` (``warned``) as short phrases, each
    once; its "Unknown option." named (option names only: a value may be a secret)."""
    from urllib.parse import parse_qsl

    from pymongo.common import URI_OPTIONS_VALIDATOR_MAP
    query = url.partition("?")[2]
    unknown = [k for k, _ in parse_qsl(query, keep_blank_values=True) if k.lower() not in URI_OPTIONS_VALIDATOR_MAP]
    out: list[str] = []
    for text in warned:
        if text.startswith("Unknown option") and unknown:
            text = f"unknown option {', '.join(unknown)}"
        text = text.splitlines()[0] if text.strip() else "an option pymongo refused"
        if text not in out:
            out.append(text)
    return out


def translate(exc: BaseException, url: str | None = None) -> Exception | None:
    """The runtime error for a pymongo error, with one short line (None for any other):
    unreachable (a down host, a failed DNS/SRV lookup) -> StoreUnavailable (CLI exit 4),
    ``MongoDB unavailable: host:port: reason`` (:func:`unreachable_reason`); a bad URL,
    database name or option, refused credentials -> ConfigError (exit 2)."""
    try:
        from pymongo import errors
    except ImportError:
        return None
    if isinstance(exc, unreachable_errors()):
        return StoreUnavailable(f"MongoDB unavailable: {unreachable_reason(exc, url)}")
    if isinstance(exc, errors.OperationFailure):
        if exc.code in (13, 18) or "authenticat" in str(exc).lower():
            return ConfigError(f"MongoDB refused the credentials of mongodb_url: {short_error(exc)}")
        return None
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, errors.ConfigurationError) and (
            "DNS" in str(exc) or "resolution lifetime" in str(exc)
            or (cause is not None and type(cause).__module__.startswith("dns"))):  # SRV/TXT lookup failed
        return StoreUnavailable(f"MongoDB unavailable: {short_error(exc)}")
    if isinstance(exc, (errors.InvalidURI, errors.InvalidName, errors.ConfigurationError)):
        return ConfigError(f"bad mongodb_url: {short_error(exc)}")
    return None


_HOST_PORT = re.compile(r"[\w.\-\]]+:\d+")
_DESCRIBED = re.compile(r"<ServerDescription \('([^']+)', (\d+)\)")


def unreachable_reason(exc: BaseException | str, url: str | None = None) -> str:
    """:func:`short_error` of ``exc``, led by the hosts it is about when it names none
    ("No servers found yet", "operation cancelled"): those of pymongo's topology
    description in the error (sorted), else those of ``url`` (credentials left out)."""
    text = exc if isinstance(exc, str) else short_error(exc)
    if _HOST_PORT.search(text):
        return text
    hosts = [] if isinstance(exc, str) else sorted({f"{h}:{p}" for h, p in _DESCRIBED.findall(str(exc))})
    where = ",".join(hosts) if hosts else url_hosts(url) if url else ""
    return f"{where}: {text}" if where else text


def url_hosts(url: str) -> str:
    """The hosts of a MongoDB URL, ``host:port,...`` (27017 when it gives none; the SRV
    name of a ``mongodb+srv://`` URL), without credentials."""
    srv = url.startswith("mongodb+srv://")
    rest = url.split("://", 1)[-1]
    netloc = re.split(r"[/?]", rest, maxsplit=1)[0].rpartition("@")[2]
    hosts = [h if srv or re.search(r":\d+$", h) else f"{h}:27017" for h in netloc.split(",") if h]
    return mask(",".join(hosts))


def short_error(exc: BaseException) -> str:
    """One short line for a pymongo error (its server selection errors carry the whole
    topology description): the first cause, without the configured timeouts."""
    text = str(exc).split(", Timeout:")[0].split(", Topology Description:")[0].split(", full error:")[0]
    text = re.sub(r" \(configured timeouts: [^)]*\)", "", text).splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def close_before_exit(client: Any) -> None:
    """Close ``client`` in a process about to exit, without pymongo's wait at exit.

    pymongo's atexit hooks join its monitor threads, which sleep in 0.5 s steps even after
    ``close()``: about 500 ms added to every short command. Once every client is closed
    (this is for the CLI, which has one) the threads have nothing left to do; they are
    daemon threads, so the hooks are unregistered and the process exits at once."""
    import atexit
    import sys
    client.close()
    for name, attr in (("pymongo.synchronous.monitor", "_shutdown_resources"),
                       ("pymongo.asynchronous.monitor", "_shutdown_resources"),
                       ("pymongo.periodic_executor", "_shutdown_executors")):
        hook = getattr(sys.modules.get(name), attr, None)
        if hook is not None:
            atexit.unregister(hook)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The pymongo errors that mean "MongoDB cannot be reached now" (retry later)."""
    from pymongo.errors import (
        AutoReconnect,
        ConnectionFailure,
        ExecutionTimeout,
        NetworkTimeout,
        ServerSelectionTimeoutError,
        WTimeoutError,
    )
    return (AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout,
            ExecutionTimeout, WTimeoutError)


def unreachable_why(client: Any) -> str | None:
    """Why no server of ``client`` can be reached, as pymongo's monitor last saw it (one
    short line; no I/O), or None while one can (or none has been checked yet). With
    :data:`HEARTBEAT_S`, an outage shows here within about a second, before any write has
    to time out."""
    from pymongo.server_type import SERVER_TYPE
    servers = list(client.topology_description.server_descriptions().values())
    if not servers or any(s.server_type != SERVER_TYPE.Unknown for s in servers):
        return None
    errors = [s.error for s in servers if s.error is not None]
    return short_error(errors[0]) if errors else None
