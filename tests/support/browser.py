"""Headless Chromium (Debian's, driven by Playwright) for the admin's browser tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import missing

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def chromium_page(monkeypatch: pytest.MonkeyPatch, output: Path) -> Iterator[Any]:
    """A fresh page; `output` (emptied first) receives the test's screenshots."""
    if not os.path.exists(CHROMIUM):
        missing("Chromium at /usr/bin/chromium")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls between
    # page steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()
