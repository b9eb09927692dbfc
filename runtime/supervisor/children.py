"""A supervisor's worker processes: each in its own process group, signalled as a group."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One worker process. ``started``: monotonic seconds."""

    proc: subprocess.Popen[bytes]
    started: float
    recycling: bool = False
    #: its number among the processes (0 to N-1; a recycling one's replacement takes its
    #: number): ``RUNTIME_WORKER_SLOT`` in its environment (its --metrics-port offset)
    slot: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


def kill_group(child: Child, sig: int) -> None:
    """Signal a child's process group (the worker and what its jobs started), else the child."""
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            child.proc.send_signal(sig)
        except ProcessLookupError:
            pass


def child_setup() -> None:  # runs in the child between fork and exec
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the child's heartbeat notices instead
        pass
