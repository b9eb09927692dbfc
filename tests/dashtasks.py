"""Tasks the dashboard tests run: one that fails until a file exists, one whose steps a
test releases one at a time (progress and logs to watch move), one that raises and
prints what it is given (hostile text)."""

from __future__ import annotations

import os
import time

from runtime import set_progress


def fail_unless(flag: str, api_token: str = "") -> str:
    """Raises ValueError until the file ``flag`` exists; then returns ``fixed`` (``api_token``:
    a secret-looking param the page must redact)."""
    if not os.path.exists(flag):
        raise ValueError(f"flag {os.path.basename(flag)} is missing")
    return "fixed"


def gated(folder: str, steps: int = 3, lines: int = 0) -> int:
    """Runs ``steps`` steps; step i waits for the file ``folder/go-i`` (a test releases
    each), then prints ``lines`` filler lines and a line saying so, and sets progress i/steps."""
    for i in range(1, steps + 1):
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(folder, f"go-{i}")) and time.monotonic() < deadline:
            time.sleep(0.05)
        for n in range(lines):
            print(f"step {i} line {n}")  # noqa: T201 - log lines that overflow the tail box
        print(f"finished step {i} of {steps}")  # noqa: T201 - the log line the page shows
        set_progress(i / steps, f"step {i} of {steps}")
    return steps


def hostile(text: str, link: str = "") -> None:
    """Prints ``text`` and raises ValueError with it as the message."""
    print(text)  # noqa: T201 - a hostile log line
    raise ValueError(text)


def slow_fail(seconds: float) -> None:
    """Runs ``seconds``, then fails: a slow job that did not succeed."""
    time.sleep(seconds)
    raise ValueError(f"failed after {seconds} s")
