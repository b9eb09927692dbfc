"""Starting and stopping a worker process's watchdog (runtime.watch)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any, Protocol

import gevent

from .. import watch
from ..broker import RedisBroker
from ..broker.connection import redis_url, sentinels_of
from ..process import is_supervised_child
from ..settings import Settings

log = logging.getLogger("runtime.worker")


class Watchable(Protocol):
    """What :func:`start_watchdog` needs of a worker."""

    id: str
    settings: Settings
    broker: RedisBroker


def tls_settings(kw: dict[str, Any]) -> dict[str, Any]:
    """The TLS settings of a redis-py connection's keywords that the watchdog's client
    needs (runtime.resp.tls_context); a setting the URL left out is absent, so the
    watchdog takes redis-py's default (the certificate verified)."""
    import inspect

    from redis.connection import SSLConnection
    out = {k: kw[k] for k in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname") if kw.get(k) is not None}
    out.setdefault("ssl_check_hostname",  # redis-py's own default (it changed across versions)
                   inspect.signature(SSLConnection.__init__).parameters["ssl_check_hostname"].default)
    return out


def redis_conf(broker: RedisBroker) -> dict[str, Any]:
    """How the watchdog reaches the worker's Redis (runtime.resp.client): the connection
    settings of its pool (the master's Sentinels and service name for a Sentinel client;
    the nodes it started from and its credentials for a Redis Cluster)."""
    if broker.clustered:
        nodes = broker.redis.nodes_manager  # type: ignore[attr-defined]
        kw = nodes.connection_kwargs
        return {"cluster": [[n.host, n.port] for n in nodes.startup_nodes.values()],
                "username": kw.get("username"), "password": kw.get("password"),
                "ssl": bool(kw.get("ssl")), **tls_settings(kw)}
    pool = broker.redis.connection_pool
    kw = pool.connection_kwargs
    conf = {k: kw.get(k) for k in ("host", "port", "path", "username", "password", "db")}
    conf["ssl"] = "SSL" in pool.connection_class.__name__
    conf.update(tls_settings(kw))
    addresses = sentinels_of(broker.redis)
    if addresses is not None:
        conf["sentinels"] = [list(a) for a in addresses]
        conf["service"] = getattr(pool, "service_name", "")
    return conf


def start_watchdog(worker: Watchable) -> subprocess.Popen[bytes] | None:
    """Start ``worker``'s watchdog process (runtime.watch), or None when the ``watchdog``
    setting is off, the worker's supervisor watches it (runtime.supervisor.watchdog), or it
    cannot be started (logged: the worker runs without one)."""
    s, keys = worker.settings, worker.broker.keys
    if not s.watchdog or is_supervised_child():  # a supervisor watches its children itself
        return None
    conf = {"pid": os.getpid(), "interval_s": s.heartbeat_interval_s, "ttl_ms": int(s.worker_ttl_s * 1000),
            "visibility_s": s.visibility_timeout_s, "job_key_prefix": keys.job(""), "redis": redis_conf(worker.broker),
            "keys": keys.watched(worker.id, s.queues),
            # for runtime.worker.takeback, once it killed the worker
            "take_back": True, "worker_id": worker.id,
            "settings": {"redis_url": redis_url(s), "key_prefix": s.key_prefix, "max_lost": s.max_lost,
                         "ttl_s": dict(s.ttl_s)}}
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", watch.__file__], stdin=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None
        # os.write, not the pipe object's write: gevent's may yield to a job that then holds
        # the GIL, and the watchdog would wait for its configuration as long as that job runs
        data = memoryview(json.dumps(conf).encode())
        while data:
            data = data[os.write(proc.stdin.fileno(), data):]
        proc.stdin.close()
    except OSError as exc:
        log.error("could not start the watchdog (%s): a job that holds the GIL may let another worker take "
                  "its jobs, and nothing stops one that never yields", exc)
        return None
    return proc


def stop_watchdog(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop the watchdog (SIGTERM; it exits within a heartbeat)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def keep_watchdog(worker: Watchable, proc: subprocess.Popen[bytes] | None) -> None:
    """The life of ``worker``'s watchdog ``proc`` (:func:`start_watchdog`, called before
    the worker claims anything, so that no job can hold the GIL before it watches): a
    greenlet (kill it to stop the watchdog) that starts another when it exits unasked
    (killed by hand, out of memory), with one line each time."""
    try:
        while proc is not None:
            gevent.sleep(worker.settings.heartbeat_interval_s)
            if proc.poll() is not None:
                log.error("the watchdog process %d exited (code %s): starting another", proc.pid, proc.returncode)
                proc = start_watchdog(worker)
    finally:
        stop_watchdog(proc)
