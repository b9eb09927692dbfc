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
    native_logging_locks()


def native_logging_locks() -> None:
    """Give the logging module and its handlers native (C) re-entrant locks instead of the
    gevent locks monkey patching makes of them. A worker logs from its hub and from native
    threads (the heartbeat); a gevent lock held by one thread while the hub waits for it
    ends the hub with ``LoopExit`` (gevent issue 1698; reproduced: a native thread and the
    hub logging in a loop fail within ~100 lines). A native lock is held only while a
    record is written (a blocking write: no greenlet switch inside), and greenlets of the
    hub's thread share it as one thread, so they never wait on one another for it."""
    import logging
    from typing import Any

    from gevent import monkey
    rlock = monkey.get_original("_thread", "RLock")

    def create_lock(self: logging.Handler) -> None:
        self.lock = rlock()
        register = getattr(logging, "_register_at_fork_reinit_lock", None)
        if register is not None:
            register(self)

    logging._lock = rlock()  # type: ignore[attr-defined]  # the module's lock (loggers, levels)
    logging.Handler.createLock = create_lock  # type: ignore[method-assign]
    for ref in list(logging._handlerList):  # type: ignore[attr-defined]  # handlers made already
        handler: Any = ref()
        if handler is not None and handler.lock is not None:
            handler.lock = rlock()


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
