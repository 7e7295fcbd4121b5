"""Fixtures of the web UI's browser tests (docs/ui.md, "Tests"): Debian's chromium, headless, driven by Playwright
for Python, a page per test at 1280×800, and a screenshot helper that keeps each page's picture in
$VAMP_TEST_ARTIFACTS (default `.artifacts/ui/`). The tests skip, saying why, when chromium or Playwright is
missing (`make test` installs both)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium tries to reach the outside, which this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 10_000               # what a page may take to show what is expected of it

try:
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=TIMEOUT_MS)
except ImportError:               # pragma: no cover - the test extra installs it
    sync_playwright = None


def artifacts_dir() -> Path:
    path = Path(os.environ.get("VAMP_TEST_ARTIFACTS") or REPO / ".artifacts" / "ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    """Per module, not per session: sync Playwright keeps an event loop running in this thread while it is open,
    which the async tests of other modules could not run beside."""
    if sync_playwright is None:
        pytest.skip("Playwright for Python is not installed (pip install 'playwright>=1.50,<2', the test extra)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium: `make system-deps`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Screens:
    """Pictures of the pages a test visits: `shoot(page, "overview")` writes ui-overview.png."""

    def __init__(self) -> None:
        self.directory = artifacts_dir()

    def shoot(self, page, name: str) -> Path:
        path = self.directory / f"ui-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screens() -> Screens:
    return Screens()


@pytest.fixture
def page(browser):
    """A fresh browser context (no token kept) at 1280×800; the page's script errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page's scripts failed: {errors}"
