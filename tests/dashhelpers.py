"""What the dashboard tests share: ``runtime dashboard`` as a process of its own (stopped
by pid), the task modules they run, a free port (tests/dashboard/conftest.py has the
fixtures)."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import wait_until, worker_env

from runtime.settings import Settings

DASH_TASKS = "tasks_example,testtasks,dashtasks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status)
    except urllib.error.HTTPError:
        return True  # it answered, if only to refuse
    except OSError:
        return False


class Dashboards:
    """``runtime dashboard`` processes on the test's settings, stopped by pid at teardown."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings, self.tmp = settings, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Start one with ``args``; returns its base URL once it answers."""
        port = free_port()
        log = open(self.tmp / f"dashboard-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the process writes it
        proc = subprocess.Popen([sys.executable, "-m", "runtime", "dashboard", "--port", str(port), *args],
                                env={**worker_env(self.settings, task_modules=DASH_TASKS), **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or answers(url + "/static/app.js"), 20, "the dashboard")
        assert proc.poll() is None, Path(log.name).read_text()
        return url

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
