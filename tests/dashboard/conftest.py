"""Fixtures of the dashboard tests: ``runtime dashboard`` as a process of its own (stopped
by pid) and a headless Chromium driven by Selenium (Debian's chromium and chromium-driver:
nothing is downloaded at run time)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until, worker_env

from runtime.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
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


@pytest.fixture
def dashboards(settings: Settings, tmp_path: Path) -> Iterator[Dashboards]:
    d = Dashboards(settings, tmp_path)
    yield d
    d.stop_all()


@pytest.fixture
def dashboard(dashboards: Dashboards) -> str:
    """The base URL of a dashboard on the test's settings (no credentials, actions on)."""
    return dashboards.start()


@pytest.fixture(scope="session")
def _chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (.ci/run installs them)")
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(_chromium: Any) -> Iterator[Any]:
    """The session's headless Chromium (Selenium WebDriver), its cookies cleared after."""
    yield _chromium
    _chromium.delete_all_cookies()


@pytest.fixture
def until() -> Callable[..., Any]:
    """wait_until, for conditions read from the browser."""
    return wait_until
