"""Headless Chromium for tests of HTML that lorafit produces (the run report, the service's page).

Driven by Playwright (PyPI ``playwright``) against Debian's ``chromium`` (``make test`` installs it where
apt-get and root are available); Playwright's own browser download is never used. Without a Chromium
the browser tests skip, unless ``LORAFIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

# The flags the machine's own probe uses: no sandbox as root, and no background connections, which this
# machine's closed network would refuse many at a time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when the machine has none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BrowserPage:
    """A Playwright page plus every console error and uncaught page exception it has seen."""

    page: object
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser_page() -> Iterator[BrowserPage]:
    """A fresh headless Chromium page; ``errors`` collects console errors and page exceptions."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("LORAFIT_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium found but LORAFIT_REQUIRE_BROWSER=1; install Debian's chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            result = BrowserPage(page)
            page.on("console", lambda msg: result.errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: result.errors.append(f"uncaught: {exc}"))
            yield result
        finally:
            browser.close()
