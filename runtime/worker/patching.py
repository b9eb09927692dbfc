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


def guard_forks() -> None:
    """In a worker process: a child that a task forks (``os.fork()``) exits at once
    (``os._exit(0)``: nothing flushed, nothing sent) the moment it would run any greenlet
    but the one that forked it and the hub. The others are copies of the worker's other
    jobs and of its loops: run in the child, they would run those jobs a second time and
    claim under the worker's id. A child that only runs its own code, and ends with
    ``os._exit()``, is left alone; one that returns into the worker's code ends at
    runtime.process.exit_if_forked, checked where a job's call returns."""
    import greenlet

    def in_child() -> None:
        from gevent.hub import Hub
        forker = greenlet.getcurrent()

        def trace(event: str, args: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
            if event in ("switch", "throw") and args[1] is not forker and not isinstance(args[1], Hub):
                os._exit(0)
        greenlet.settrace(trace)
    os.register_at_fork(after_in_child=in_child)
