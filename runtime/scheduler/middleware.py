"""The scheduler as a worker middleware: each worker whose tasks declare schedules (or
whose project's runtime.toml does) runs :class:`~runtime.scheduler.loop.SchedulerLoop`
in a greenlet of its own, from its start to its stop. Take it out of the ``middleware``
setting to run no scheduler on a worker."""

from __future__ import annotations

import logging
from typing import Any

from ..catalog import Served
from ..middleware import Middleware, WorkerView
from ..schedule import Schedule

log = logging.getLogger("runtime.scheduler")


class SchedulerMiddleware(Middleware):
    """Starts the scheduler on worker start, stops it on worker stop."""

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.loop: Any = None
        self.greenlet: Any = None
        #: the schedules :meth:`on_check` found (None: not checked yet)
        self.schedules: list[Schedule] | None = None

    def on_check(self, served: Served) -> list[str]:
        """Read and check the schedules of ``served`` and of runtime.toml; one line per
        schedule. Raises ConfigError (runtime.scheduler.config.checked_schedules)."""
        from .config import checked_schedules, describe_schedule
        self.schedules = checked_schedules(served)
        return [describe_schedule(s) for s in self.schedules]

    def on_worker_start(self, worker: WorkerView | None) -> None:
        broker, served = getattr(worker, "broker", None), getattr(worker, "served", None)
        if worker is None or broker is None or served is None:
            return  # run_task, or a worker without a broker: nothing to schedule
        import gevent

        from .config import checked_schedules
        from .loop import SchedulerLoop
        from .state import ScheduleState
        schedules = self.schedules if self.schedules is not None else checked_schedules(served)
        if not schedules:  # those of its modules' tasks left in Redis were removed from the code
            ScheduleState(broker).mark_removed([], served.modules)
            return
        self.loop = SchedulerLoop(ScheduleState(broker), schedules, worker.id, sleep=gevent.sleep,
                                  modules=served.modules)
        self.greenlet = gevent.spawn(self.loop.run)
        log.info("scheduler running %d schedule(s): %s", len(schedules), ", ".join(s.name for s in schedules))

    def on_worker_stop(self, worker: WorkerView | None) -> None:
        if self.loop is None:
            return
        self.loop.stop()
        self.greenlet.kill()
        try:
            self.loop.state.leave(self.loop.worker_id)
        except Exception:  # noqa: BLE001 - its entry goes stale and is shown so
            log.warning("scheduler: could not deregister", exc_info=True)
        self.loop = self.greenlet = None
