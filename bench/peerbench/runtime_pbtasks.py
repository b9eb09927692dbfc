"""peerbench tasks for runtime (imported by the `runtime worker` the adapter starts).

The worker may import them because the adapter sets RUNTIME_TASK_MODULES to this
module's name. Bodies are the harness' (see pbtask.py): a no-op marks itself done, the
io task sleeps 10 ms (gevent-patched in the worker) first, a probe stamps its start.
"""

import os
import time

import pbtask

#: runtime-obs (runtime_obs_adapter): each no-op also reports progress once
_PROGRESS = bool(os.environ.get("RUNTIME_PB_PROGRESS"))


def noop(target):
    if _PROGRESS:
        from runtime import set_progress
        set_progress(1.0, "done")
    pbtask.mark_done(target)


def sleep10(target):
    time.sleep(0.010)
    pbtask.mark_done(target)


def probe(seq):
    pbtask.probe_mark(seq)
    return seq
