"""``/registry/docs`` (Swagger UI) and ``/registry/redoc`` render their operations in headless Chromium with no
network but 127.0.0.1: every asset comes from hubgate itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.browser import launch, requested_urls, until

pytestmark = pytest.mark.integration


def test_api_docs_render_offline_from_hubgates_own_assets(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = serve(log_level="warning")
    browser = launch(tmp_path / "profile")
    try:
        browser.get(f"{s.url}/registry/docs")
        operations = until(lambda: browser.find_elements("css selector", ".opblock"), timeout=60, what="Swagger operations")
        summaries = " ".join(e.text for e in browser.find_elements("css selector", ".opblock-summary-path"))
        assert len(operations) >= 10 and "/registry/v1/requests" in summaries, summaries
        swagger_urls = requested_urls(browser)

        browser.get(f"{s.url}/registry/redoc")
        until(lambda: "/registry/v1/requests" in browser.find_element("tag name", "body").text, timeout=60,
              what="ReDoc operations")
        redoc_urls = requested_urls(browser)
    finally:
        browser.quit()
    urls = [u for u in swagger_urls + redoc_urls if u.startswith(("http://", "https://"))]
    assert urls and all(u.startswith(s.url) for u in urls), [u for u in urls if not u.startswith(s.url)]
    assert any(u.endswith("/registry/docs/assets/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/registry/docs/assets/redoc.standalone.js") for u in urls)
