"""gevent's monkey patching: the one place it is done, first thing in a worker process
(``runtime worker``) and in the test suite, which runs workers in-process."""

from __future__ import annotations

import os


def patch() -> None:
    """Monkey-patch the standard library for gevent, then :func:`quicken_spawn`. Call it
    before anything imports socket, ssl, threading or redis."""
    from gevent import monkey
    monkey.patch_all()
    quicken_spawn()


def quicken_spawn() -> None:
    """Have gevent skip recording who spawned each greenlet (its documented knob
    ``track_greenlet_tree``, on by default), unless ``GEVENT_TRACK_GREENLET_TREE`` says
    otherwise. The worker spawns a greenlet per job; recording the spawning greenlet, the
    spawn-tree locals and 10 frames of the spawning stack cost ~35,000 instructions a job
    (callgrind, no-op drain), about 8 % of the worker's whole cost of a job. Lost: those
    three attributes of greenlets, which only gevent's debugging dumps read."""
    if "GEVENT_TRACK_GREENLET_TREE" not in os.environ:
        from gevent import config
        config.track_greenlet_tree = False
