"""peerbench tasks for runtime (imported by the `runtime worker` the adapter starts).

The worker may import them because the adapter sets RUNTIME_TASK_MODULES to this
module's name. Bodies are the harness' (see pbtask.py): a no-op marks itself done, the
io task sleeps 10 ms (gevent-patched in the worker) first, a probe stamps its start.
"""

import time

import pbtask


def noop(target):
    pbtask.mark_done(target)


def sleep10(target):
    time.sleep(0.010)
    pbtask.mark_done(target)


def probe(seq):
    pbtask.probe_mark(seq)
    return seq
