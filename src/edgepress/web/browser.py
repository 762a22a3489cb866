"""Headless Chromium through Playwright's Python package, pointed at the system's Chromium (no
browser download). A page's uncaught errors and console errors end up in the error message."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from edgepress.errors import TargetError

# SwiftShader-free, sandbox as the user allows it; the rest keeps timings from being throttled
ARGS = ["--disable-gpu", "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]


@contextmanager
def launched(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        except Error as error:
            raise TargetError(f"Chromium ({chromium}) did not start: {str(error).splitlines()[0]}; check that `{chromium} --headless --version` works") from None
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A page at ``url`` whose module script sets ``window.edgepressReady`` (or fails)."""

    def __init__(self, browser: Any, url: str, timeout_s: float = 120):
        self.errors: list[str] = []
        self.page = browser.new_page()
        self.page.set_default_timeout(timeout_s * 1000)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.goto(url)
        self.call("() => window.edgepressReady")

    def call(self, function: str, argument: Any = None) -> Any:
        """``function`` (a JavaScript arrow function, awaited) applied to ``argument`` in the page."""
        from playwright.sync_api import Error

        try:
            self.page.wait_for_function("() => window.edgepressReady !== undefined")
            if self.page.evaluate("() => window.edgepressReady") is not True:
                raise TargetError(f"the browser page did not start: {self.page.evaluate('() => String(window.edgepressReady)')}")
            return self.page.evaluate(function, argument)
        except Error as error:
            seen = "; ".join(dict.fromkeys(self.errors))[:400]
            raise TargetError(f"in the browser: {str(error).splitlines()[0]}" + (f" (page errors: {seen})" if seen else "")) from None

    def close(self) -> None:
        self.page.close()
