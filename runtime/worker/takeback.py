"""Taking back the jobs of a worker its watchdog killed (``python -m
runtime.worker.takeback``, the watchdog's configuration as JSON on standard input:
runtime.worker.watching). The watchdog itself imports only the standard library; this
one-off process has the reaper's code: the job past its hard deadline ends ``timeout``
(reap.lua), the others are requeued uncharged (their start records say ``spared``), and
the worker's registry entry is dropped, at once rather than at the next reaper's pass.
The watchdog claimed the worker before the kill (runtime.watch.CLAIM), as this process
claims it: the reapers that see it dead leave its jobs and its ``kill`` event to it.
"""

from __future__ import annotations

import json
import logging
import sys

from ..broker import RedisBroker, connect
from ..settings import load_settings
from ..watch import claimant
from .reaper import Reaper


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conf = json.loads(sys.stdin.read())
    settings = load_settings(conf["settings"], env={})
    broker = RedisBroker(connect(settings), settings)
    worker_id = conf["worker_id"]
    why = "its worker process was killed by its watchdog (a job past its hard deadline)"
    Reaper(broker, claimant=claimant(worker_id)).take_back([worker_id], why,
                                                          event={"event": "kill", "reason": "hard-timeout"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
