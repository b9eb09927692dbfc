"""Fixtures of the dashboard tests: ``runtime dashboard`` as a process of its own (stopped
by pid) and a headless Chromium driven by Selenium (Debian's chromium and chromium-driver:
nothing is downloaded at run time)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashhelpers import Dashboards
from helpers import wait_until

from runtime.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


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
