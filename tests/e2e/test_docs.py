"""Swagger UI and ReDoc render in a real browser that may reach nothing but this server, as on a
hospital's closed network (they loaded from a CDN and were blank there)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.support.server import ServerProcess

try:
    from playwright import sync_api
except ImportError:
    sync_api = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        sync_api is None or not CHROMIUM.exists(),
        reason=f"needs playwright (pip) and Debian's chromium at {CHROMIUM}",
    ),
]


def test_swagger_ui_and_redoc_render_with_no_outside_network(server: ServerProcess) -> None:
    own = urlsplit(server.url).netloc
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == own or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.goto(f"{server.url}/docs")
            page.wait_for_selector("text=Score one event", timeout=15_000)
            assert page.locator(".opblock").count() >= 9
            page.goto(f"{server.url}/redoc")
            page.wait_for_selector("h2:has-text('Score one event')", timeout=15_000)
        finally:
            browser.close()
    assert outside == []
