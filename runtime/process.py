"""What one process knows of itself and of others: RSS, liveness, ids, supervision.

- :class:`RSS` reads this process's resident set size with ``os.pread`` on a kept-open
  ``/proc/self/statm`` (about 1.5 µs a read, measured), psutil elsewhere;
  :func:`rss_reader` gives one only where RSS can be read (else the memory features are
  off, said once per process: :func:`rss_unreadable`); :func:`rss_of` reads another
  process's (psutil).
- :func:`malloc_trim` hands free heap back to the system (glibc).
- :func:`alive` tells whether a pid is still the process registered under it.
- Worker and supervisor ids are ``{host}.{pid}.{random}``: :func:`new_id`, :func:`host_pid`.
- A worker started by a supervisor finds its pid and registry id in the environment
  (:data:`SUPERVISOR_PID_ENV`, :data:`SUPERVISOR_ID_ENV`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from .resets import on_reset

if TYPE_CHECKING:  # psutil is imported where it is used: `runtime worker` reads this module
    import psutil  # before it patches gevent

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Env of a worker started by a supervisor: the supervisor's pid and registry id.
SUPERVISOR_PID_ENV, SUPERVISOR_ID_ENV = "RUNTIME_SUPERVISOR_PID", "RUNTIME_SUPERVISOR_ID"
#: A supervised worker process's slot (0 to processes - 1, see supervisor.children.Child)
SLOT_ENV = "RUNTIME_WORKER_SLOT"
#: This host's name in registry ids and entries, where the system's is not the one to use
#: (a container's hostname shared by several pods, a test giving workers hosts of their own).
HOSTNAME_ENV = "RUNTIME_HOSTNAME"


def hostname() -> str:
    """This host's name as registry ids and entries give it: ``RUNTIME_HOSTNAME``, else the
    system's. A reaper tells a dead worker of its own host by its pid, of another host by
    its registry entry only: two hosts must not share a name."""
    return os.environ.get(HOSTNAME_ENV) or socket.gethostname()


def worker_slot() -> int:
    """This worker process's slot under its supervisor (0 unsupervised)."""
    try:
        return max(0, int(os.environ.get(SLOT_ENV, "0"))) if is_supervised_child() else 0
    except ValueError:
        return 0


class RSS:
    """Reads this process's resident set size, in bytes (``RSS()()``).

    ``source`` is "statm" (a kept-open /proc/self/statm) or "psutil". Raises OSError or
    psutil.Error when neither can read it.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd: int | None
        self.proc: psutil.Process | None = None
        try:
            self.fd = os.open("/proc/self/statm", os.O_RDONLY)
            self.source = "statm"
        except OSError:
            import psutil
            self.fd, self.proc, self.source = None, psutil.Process(), "psutil"

    def __call__(self) -> int:
        if self.fd is not None:
            return int(os.pread(self.fd, 64, 0).split()[1]) * _PAGE
        assert self.proc is not None
        return int(self.proc.memory_info().rss)

    def read(self) -> int | None:
        """RSS in bytes, or None when it cannot be read (said once: :func:`rss_unreadable`)."""
        try:
            return self()
        except Exception as exc:  # noqa: BLE001 - OSError, psutil.Error, a garbled statm
            rss_unreadable(exc)
            return None


def rss_reader() -> RSS | None:
    """A reader of this process's RSS that has read it once, or None where it cannot be
    read (a locked-down /proc, psutil denied: said once per process, :func:`rss_unreadable`)."""
    try:
        rss = RSS()
        rss()
    except Exception as exc:  # noqa: BLE001 - OSError, psutil.Error...
        rss_unreadable(exc)
        return None
    return rss


_unreadable_said = False


def rss_unreadable(exc: BaseException) -> None:
    """Warn, once per process, that RSS cannot be read (``exc``: why) and what is off."""
    global _unreadable_said
    if not _unreadable_said:
        import logging  # here: `runtime worker` reads this module before gevent patches threading
        _unreadable_said = True
        logging.getLogger("runtime.process").warning(
            "this process cannot read its RSS (%s: %s): the memory features are off (RSS in job reports, "
            "runtime workers and metrics; recycling over --mem-limit); jobs run as usual", type(exc).__name__, exc)


@on_reset
def _forget_warning() -> None:
    global _unreadable_said
    _unreadable_said = False


def rss_of(proc: psutil.Process | int | None) -> int:
    """RSS of ``proc`` (a psutil handle, or a pid) in bytes; 0 when it cannot be read (gone,
    no /proc, denied)."""
    import psutil
    try:
        if isinstance(proc, int):
            proc = psutil.Process(proc)
        return int(proc.memory_info().rss) if proc is not None else 0
    except (psutil.Error, OSError):
        return 0


def this_process() -> tuple[psutil.Process | None, float]:
    """(psutil handle of this process, its start time in UNIX s); (None, 0.0) without /proc."""
    import psutil
    try:
        proc = psutil.Process()
        return proc, proc.create_time()
    except (psutil.Error, OSError):
        return None, 0.0


def alive(pid: int, started: float | None) -> bool:
    """Is ``pid`` alive and (when ``started``, UNIX s, is known) the same process as then?
    A zombie (dead, not yet reaped by its parent) is not alive."""
    import psutil
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) >= 0.01:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


_libc: Any = None


def load_libc() -> bool:
    """Load glibc's ``malloc_trim`` now (call it from the main thread: the fallback lookup
    ``find_library`` runs ldconfig in a subprocess, which gevent cannot do from another
    thread); False where there is none (musl, macOS)."""
    global _libc
    if _libc is None:
        for name in ("libc.so.6", None):
            try:
                lib = ctypes.CDLL(name or ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
                break
            except (OSError, AttributeError, TypeError):
                _libc = False
    return bool(_libc)


#: Allocations (net of frees) between young-generation collections in a worker: CPython's
#: 700 ran one every ~2 traced jobs, and collections walked the spans waiting for export:
#: 17 ms of GC per 1,000 no-op jobs with all default middleware, 7 ms at 10,000
#: (bench/README.md, issue 15). A cycle a job leaves still goes within a few dozen jobs.
GC_YOUNG = 10_000


def settle_heap() -> None:
    """At worker start: collect, move what start-up made (it lives as long as the process)
    out of the cyclic collector's way, so that a full collection does not walk it while
    jobs wait (tens of ms), and space young collections by GC_YOUNG allocations."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(GC_YOUNG, gc.get_threshold()[0]), *gc.get_threshold()[1:])


def malloc_trim() -> bool:
    """Return free heap memory to the system (glibc ``malloc_trim(0)``); False where there
    is no glibc (musl, macOS), True when it ran."""
    if not load_libc():
        return False
    _libc.malloc_trim(0)
    return True


def new_id(kind: str = "") -> str:
    """A registry id ``{host}.{pid}.{kind}{random}`` for this process (kind "s": supervisor)."""
    return f"{hostname()}.{os.getpid()}.{kind}{os.urandom(2).hex()}"


def exit_if_forked(owner_pid: int) -> None:
    """Exit at once (status 0, no clean-up: nothing flushed, nothing sent) when this process
    is not ``owner_pid``, the worker process, but a child forked from it that came back
    into runtime's code (a task that called ``os.fork()`` and returned in the child): it
    would record an outcome that is not its own under the worker's id. (A child that lets
    the copied hub run other greenlets ends at runtime.worker.patching.guard_forks.)"""
    if os.getpid() != owner_pid:
        os._exit(0)


def host_pid(worker_id: str) -> tuple[str | None, int | None]:
    """Host and pid from a registry id ``{host}.{pid}.{random}``; (None, None) if not one."""
    parts = worker_id.rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None


def is_supervised_child() -> bool:
    """Is this process a worker started by a supervisor (its parent)?"""
    return os.environ.get(SUPERVISOR_PID_ENV) == str(os.getppid())


def supervisor_id() -> str:
    """The registry id of this worker's supervisor, or ``""``."""
    return os.environ.get(SUPERVISOR_ID_ENV, "") if is_supervised_child() else ""


def notify_supervisor() -> bool:
    """Send SIGUSR1 to this process's supervisor (its parent, named by the environment), so
    that it starts a replacement now; False when there is none."""
    if not is_supervised_child():
        return False
    try:
        os.kill(os.getppid(), signal.SIGUSR1)
    except OSError:
        return False
    return True
