"""Tasks used only by the tests (allowed through RUNTIME_TASK_MODULES=...,testtasks)."""

from __future__ import annotations

import contextvars
import os
import signal
import time
from os import getenv  # noqa: F401 - imported on purpose: callable here, but not a task
from typing import Any

from runtime import Retry, task


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def raise_bad_str() -> None:
    raise BadStr()


def raise_unicode() -> None:
    raise ValueError("échec: ファイルが見つかりません ✗")


def not_json() -> Any:
    return {"when": object()}


def add(a: int, b: int) -> int:
    return a + b


@task(keep="none")
def add_unkept(a: int, b: int) -> int:
    """add, whose document Redis does not keep after a success."""
    return a + b


@task(keep="none")
def fail_unkept() -> None:
    raise ValueError("a failure is kept whatever keep says")


def _private() -> str:
    """Defined here but private: not a task."""
    return "private"


def resize(path: str, width: int, height: int | None = None) -> dict[str, Any]:
    return {"path": path, "width": width, "height": height}


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task(timeout_s=0.3)
def too_slow(seconds: float = 5.0) -> None:
    time.sleep(seconds)


@task(max_retries=2, retry_delay_s=0.2)
def always_retry() -> None:
    raise Retry("not yet")


@task(max_retries=2, retry_delay_s=0.3, retry_backoff=2.0)
def always_fail_retried() -> None:
    raise ConnectionError("down")


@task(timeout_s=0.5)
def hog(seconds: float = 3.0) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def spin(seconds: float = 60.0) -> int:
    """A pure-Python loop that never yields to the gevent hub for ``seconds``."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


#: Code whose frames belong to module "logging" as far as a frame's globals tell: one of the
#: libraries a signal handler never raises into (runtime.worker.signals.NOT_THE_TASK).
_AS_LOGGING: dict[str, Any] = {"__name__": "logging.testtasks", "time": time}
exec("def busy(seconds):\n"
     "    end = time.monotonic() + seconds\n"
     "    while time.monotonic() < end:\n"
     "        pass\n"
     "def here():\n"
     "    import sys\n"
     "    from runtime.worker.signals import in_task_code\n"
     "    return in_task_code(sys._getframe())\n", _AS_LOGGING)


def spin_in_library(library_s: float = 4.0, seconds: float = 60.0) -> int:
    """Spins ``library_s`` inside "logging" (see _AS_LOGGING), then ``seconds`` in its own code."""
    _AS_LOGGING["busy"](library_s)
    return spin(seconds)


def interruptible_here() -> list[bool]:
    """Would a signal handler raise into this task's own frame, and into a "logging" one?"""
    import sys

    from runtime.worker.signals import in_task_code
    return [in_task_code(sys._getframe()), _AS_LOGGING["here"]()]


class Adder:
    def run(self, params: dict[str, Any]) -> int:
        return params["a"] + params["b"]


def chatty(n: int, lines: int = 5, step_s: float = 0.01) -> int:
    """Logs and prints lines tagged with n, yielding between them."""
    import logging
    log = logging.getLogger("testtasks.chatty")
    for i in range(lines):
        log.warning("job %d line %d", n, i)
        print(f"print {n} line {i}")
        time.sleep(step_s)
    return n


def say(text: str) -> str:
    """Prints ``text`` (and returns it)."""
    print(text)
    return text


def burn_and_sleep(burn_s: float = 0.0, sleep_s: float = 0.0) -> None:
    """Burn ``burn_s`` of this thread's CPU time (however busy the machine), then sleep."""
    end = time.thread_time() + burn_s
    while time.thread_time() < end:
        pass
    time.sleep(sleep_s)



def traced_child(n: int, sleep_s: float = 0.01) -> str:
    """Makes a child span of the job's span (through the global tracer provider)."""
    from opentelemetry import trace
    with trace.get_tracer("testtasks").start_as_current_span(f"child {n}") as span:
        time.sleep(sleep_s)
        return format(span.get_span_context().trace_id, "032x")


def queue_child(path: str, params: dict) -> str:
    """Queues another job from inside this one (its trace continues)."""
    from runtime import queue_job
    return queue_job(path, params)


def spawn_children(n: int = 3) -> list:
    """Starts greenlets with runtime.spawn; each logs and makes a span."""
    import logging

    import gevent
    from opentelemetry import trace

    from runtime import spawn

    def child(i):
        with trace.get_tracer("testtasks").start_as_current_span(f"spawned {i}"):
            logging.getLogger("testtasks").warning("spawned child %d", i)
    gevent.joinall([spawn(child, i) for i in range(n)])
    return n


def _burn(seconds: float) -> int:
    """CPU in small slices, yielding between them (so other greenlets run meanwhile)."""
    import gevent
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        for _ in range(2000):
            n += 1
        gevent.sleep(0)
    return n


def burn_alpha(seconds: float = 0.3) -> int:
    return _burn(seconds)


def burn_beta(seconds: float = 0.3) -> int:
    return _burn(seconds)


@task(profile=True)
def profiled_sleep(seconds: float = 0.2) -> float:
    time.sleep(seconds)
    return seconds


def surrogate(where: str = "exception") -> str:
    """Text with a lone surrogate, as os.listdir gives for undecodable file names."""
    text = "caf\udce9.txt"
    if where == "exception":
        raise ValueError(f"cannot open {text}")
    if where == "progress":
        from runtime import set_progress
        set_progress(0.5, text)
    if where == "log":
        import logging
        logging.getLogger("testtasks").warning("saw %s", text)
    return text if where == "result" else "ok"


def raise_greenlet_exit() -> None:
    import gevent
    raise gevent.GreenletExit()


def circular() -> dict:
    d: dict = {}
    d["self"] = d
    return d


_held: list[bytes] = []


def allocate(mb: int, hold_s: float = 0.0, keep: bool = False) -> int:
    """Touch ``mb`` MiB of memory and hold it ``hold_s`` seconds (cooperatively); with
    ``keep``, never free it (a leak)."""
    block = b"\x01" * (mb << 20)
    if keep:
        _held.append(block)
    time.sleep(hold_s)
    return len(block)


_probe: contextvars.ContextVar[str | None] = contextvars.ContextVar("testtasks_probe", default=None)


def context_leak(value: str) -> str | None:
    """Set a context variable and return what it held before (None: a fresh context)."""
    before = _probe.get()
    _probe.set(value)
    return before


_local = __import__("threading").local()  # a greenlet-local once the worker is patched


def local_leak(value: str) -> str | None:
    """Set a thread-local (greenlet-local in a worker) and return what it held before."""
    before = getattr(_local, "value", None)
    _local.value = value
    return before


def leave_timeout(seconds: float = 0.2) -> str:
    """Arm a gevent.Timeout on the job's greenlet and never cancel it (a bug in user code)."""
    import gevent
    gevent.Timeout(seconds).start()
    return "armed"


def later_kill(delay_s: float = 0.2) -> str:
    """Have the job's greenlet killed after the job returned (a watchdog keyed on it)."""
    import gevent
    gevent.spawn_later(delay_s, gevent.getcurrent().kill, block=False)
    return "scheduled"


def spawn_tree() -> bool:
    """Does gevent record who spawned the job's greenlet (track_greenlet_tree)?"""
    import gevent
    return getattr(gevent.getcurrent(), "spawning_greenlet", None) is not None


def blob(kb: int) -> str:
    """A result of ``kb`` KiB."""
    return "é" * (kb * 512)


def print_text(text: str) -> None:
    """Prints ``text`` (what a job writes to stdout reaches the worker's console)."""
    print(text)  # noqa: T201 - the point of the task


def progress(n: int, label: str = "", sleep_every: int = 0) -> int:
    """Redraws a tqdm-style progress bar ``n`` times (carriage returns, one newline at the
    end); with ``sleep_every``, yields to other greenlets every that many redraws."""
    import gevent
    for i in range(1, n + 1):
        print(f"\r{label}{i}/{n}", end="")  # noqa: T201 - the point of the task
        if sleep_every and i % sleep_every == 0:
            gevent.sleep(0)
    print(" done" if n else "", end="")  # noqa: T201 - an open line the job's end closes
    return n


def deep_raise(depth: int = 40) -> None:
    """Raises ValueError from ``depth`` frames down (two functions in turn, so that the
    traceback shows every frame rather than "previous line repeated")."""
    def down(n: int) -> None:
        if n <= 1:
            raise ValueError(f"bottom of {depth} frames")
        further(n - 1)

    def further(n: int) -> None:
        down(n)
    down(depth)


@task(max_retries=100, retry_delay_s=0)
def fail_holding(mb: int = 50) -> None:
    """Raises (and is retried, 100 times) while a local holds ``mb`` MiB."""
    held = bytearray(mb * 2**20)
    held[::4096] = b"x" * len(held[::4096])  # touched: counted in RSS
    raise ValueError(f"failed holding {len(held)} bytes")


@task(max_retries=3, retry_delay_s=0)
def flaky_baggage(fail_times: int = 2) -> dict[str, Any]:
    """Fails its first ``fail_times`` attempts, each error naming the OpenTelemetry baggage
    the attempt ran with; then returns that baggage."""
    from opentelemetry import baggage

    from runtime.context import current_job
    ctx = current_job.get()
    attempt = ctx.attempt if ctx else 1
    seen = dict(baggage.get_all())
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt} baggage {seen}")
    return seen


def log_then_fail(user: str, password: str) -> None:
    """Logs a line, prints one, then raises ValueError."""
    import logging
    logging.getLogger("testtasks.log_then_fail").warning("checking %s", user)
    print(f"about to fail for {user}")  # noqa: T201 - captured output becomes a breadcrumb
    raise ValueError(f"no such user {user}")


@task(timeout_s=0.3)
def slow_child(sleep_s: float = 5.0) -> None:
    """Makes a child span that its job's timeout (0.3 s) cuts off."""
    from opentelemetry import trace
    with trace.get_tracer("testtasks").start_as_current_span("slow child"):
        time.sleep(sleep_s)


def annotate_span(user: str) -> str:
    """Annotates its job's span from the task's code, as users do: an attribute, an event,
    a caught exception; returns the span's class name."""
    from opentelemetry import trace
    span = trace.get_current_span()
    span.set_attribute("app.user", user)
    span.set_attribute("app.bad", object())  # not a value OTel takes: None and a warning, as the SDK does
    span.add_event("checked", {"rows": 3})
    try:
        raise KeyError("missing")
    except KeyError as exc:
        span.record_exception(exc)
    return type(span).__name__


def crash_counted(path: str) -> None:
    """Notes its run in the file ``path`` (one byte a run), then kills its worker process
    with a segfault."""
    with open(path, "a") as f:
        f.write("x")
    os.kill(os.getpid(), signal.SIGSEGV)


def fork_and_return(path: str) -> int:
    """Forks; the child writes its pid to ``path`` and returns into the worker, as a task
    that forks carelessly would. Returns the pid of the process returning."""
    child = os.fork()
    if child == 0:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    return os.getpid()


def pid() -> int:
    """The pid of the process that runs it."""
    return os.getpid()


def hold_gil(seconds: float, path: str = "") -> str:
    """A C call that holds the GIL for ``seconds`` (libc's sleep through ctypes.PyDLL,
    which does not release it), as a catastrophic regex or a long numpy call would; notes
    each run in the file ``path`` (one byte a run) first. Returns "done"."""
    import ctypes
    if path:
        with open(path, "a") as f:
            f.write("x")
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))
    return "done"


@task(timeout_s=1)
def hold_gil_past_timeout(seconds: float = 60.0) -> str:
    """:func:`hold_gil` under a 1 s timeout, which cannot fire while the GIL is held."""
    return hold_gil(seconds)


@task(timeout_s=None)
def sleep_untimed(seconds: float) -> float:
    """:func:`sleep` with no timeout at all (``timeout_s=None``)."""
    time.sleep(seconds)
    return seconds


def fork_then_sleep(path: str) -> int:
    """Forks; the child notes its pid in ``path``, sleeps on the gevent hub (so the copied
    hub could run the worker's other greenlets) and ends with os._exit(0)."""
    child = os.fork()
    if child == 0:
        with open(path, "a") as f:
            f.write(f"child {os.getpid()}\n")
        time.sleep(0.5)
        os._exit(0)
    return child


def note(path: str, tag: str, seconds: float = 0.3) -> str:
    """Notes '<pid> <tag>' in ``path`` before and after sleeping ``seconds``."""
    for _ in range(2):
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {tag}\n")
        time.sleep(seconds / 2)
    return tag


@task(keep="compact", max_retries=1, retry_delay_s=0)
def flaky_compact() -> str:
    """Fails its first attempt (after a log line), then succeeds: Redis keeps the success
    compact."""
    from runtime.context import current_job
    ctx = current_job.get()
    print("attempt", ctx.attempt if ctx else 1)
    if ctx and ctx.attempt == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@task(keep="compact")
def add_compact(a: int, b: int) -> int:
    """add, of which Redis keeps only the status, times, params and result after a success."""
    from runtime import set_progress
    set_progress(0.5, "half")
    print("a log line")
    return a + b
