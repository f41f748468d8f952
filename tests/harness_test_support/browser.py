"""Headless Chromium for the site tests: Debian's `chromium` package driven by Playwright (never
`playwright install`, which downloads a browser). Every request, dialog and script error of a page is recorded.

A missing browser is a failure, not a skip: CI installs `chromium` in `.ci/run`, and a skipped browser test would
let a broken site pass. Set HARNESS_SKIP_BROWSER_TESTS=1 to skip these tests on a machine without Chromium.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm


def chromium_path() -> str:
    path = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("HARNESS_SKIP_BROWSER_TESTS") == "1":
            pytest.skip("no Chromium and HARNESS_SKIP_BROWSER_TESTS=1")
        pytest.fail("the site tests need Chromium: `apt-get install chromium` (Debian), or point HARNESS_CHROMIUM "
                    "at a Chromium binary, or set HARNESS_SKIP_BROWSER_TESTS=1 to skip them")
    return path


@dataclass
class OpenedPage:
    page: Any
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def open_page(tmp_path: Path) -> Iterator[Any]:
    """`open_page(path)` -> OpenedPage: the file loaded in a fresh headless Chromium profile."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            def load(path: Path) -> OpenedPage:
                page = context.new_page()
                opened = OpenedPage(page)
                context.on("request", lambda request: opened.requests.append(request.url))
                page.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
                page.on("pageerror", lambda error: opened.errors.append(str(error)))
                page.goto(Path(path).resolve().as_uri(), wait_until="load")
                return opened

            yield load
        finally:
            context.close()
