"""Debian's Chromium driven by Playwright for the web page's tests: never a downloaded
browser (`.ci/install-chromium` installs the package when it is missing). Screenshots go
to test-artifacts/web/ for people to look at."""

import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
VIEWPORT = {"width": 1600, "height": 1000}


@dataclass
class Opened:
    page: Page
    console_errors: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        found = shutil.which("chromium")
        raise RuntimeError(
            f"Debian's chromium is missing ({found=}): apt-get install -y chromium "
            "(make test does it through .ci/install-chromium)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def page_at(
    url: str, before: Callable[[Page], Awaitable[None]] | None = None
) -> AsyncIterator[Opened]:
    """A fresh browser page on `url`, its console errors and uncaught exceptions kept;
    `before` sets the page up before it loads (routes)."""
    async with chromium() as browser:
        context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        page = await context.new_page()
        opened = Opened(page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                opened.console_errors.append(message.text)

        def on_page_error(error: Error) -> None:
            opened.console_errors.append(f"uncaught: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        if before is not None:
            await before(page)
        await page.goto(url)
        try:
            yield opened
        finally:
            await context.close()
