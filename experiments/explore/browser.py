"""Headless Chromium driven by Selenium, for the explorer's browser test and its benchmark.

Uses Debian's `chromium` and `chromedriver` (apt-get install chromium chromium-driver), the two
built from one source, so their versions always match; Selenium is told both paths, so it never
looks for (or downloads) a driver of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.explore.models import ProjectError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# headless, no GPU, and nothing that reaches the network on its own (updates, sync, QUIC probes)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")


class BrowserUnavailable(ProjectError):
    """Selenium, Chromium or its driver is missing, or the browser did not start."""


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A Selenium WebDriver on a fresh headless Chromium profile (removed afterwards), with a
    window of width x height CSS pixels."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("selenium is not installed (pip install selenium)") from None
    chromium_path = os.environ.get("CHROMIUM", CHROMIUM)
    driver_path = os.environ.get("CHROMEDRIVER", CHROMEDRIVER)
    for path, package in ((chromium_path, "chromium"), (driver_path, "chromium-driver")):
        if not Path(path).is_file():
            raise BrowserUnavailable(f"{path} not found (apt-get install -y {package})")
    profile = tempfile.mkdtemp(prefix="explorer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        try:
            driver = webdriver.Chrome(options=options, service=Service(driver_path))
        except WebDriverException as err:
            reason = (err.msg or type(err).__name__).strip().splitlines()[0]
            raise BrowserUnavailable(f"headless Chromium did not start: {reason[:200]}") from None
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
