"""Taking back the jobs of a worker its watchdog killed (``python -m
runtime.worker.takeback``, the watchdog's configuration as JSON on standard input:
runtime.worker.watching). The watchdog itself imports only the standard library; this
one-off process has the reaper's code: the job past its hard deadline ends ``timeout``
(reap.lua), the others are requeued uncharged (their start records say ``spared``), and
the worker's registry entry is dropped, at once rather than at the next reaper's pass.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import redis

from ..broker import RedisBroker
from ..settings import load_settings
from .reaper import Reaper


def client_of(conf: dict[str, Any]) -> redis.Redis:
    """A client of the Redis the watchdog's ``conf["redis"]`` describes."""
    c = conf
    kw = {k: c[k] for k in ("username", "password", "db") if c.get(k) is not None}
    if c.get("sentinels"):
        from redis.sentinel import Sentinel
        sentinel = Sentinel([tuple(s) for s in c["sentinels"]], socket_timeout=5.0)
        return sentinel.master_for(c["service"], decode_responses=True, **kw)  # type: ignore[no-any-return]
    if c.get("path"):
        return redis.Redis(unix_socket_path=c["path"], decode_responses=True, **kw)
    return redis.Redis(host=c["host"], port=int(c["port"]), decode_responses=True, ssl=bool(c.get("ssl")),
                       ssl_cert_reqs=c.get("ssl_cert_reqs") or "required", **kw)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conf = json.loads(sys.stdin.read())
    settings = load_settings(conf["settings"], env={})
    broker = RedisBroker(client_of(conf["redis"]), settings)
    worker_id = conf["worker_id"]
    Reaper(broker).take_back([worker_id], "its worker process was killed by its watchdog (a job past its hard "
                             "deadline)", event={"event": "kill", "reason": "hard-timeout"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
