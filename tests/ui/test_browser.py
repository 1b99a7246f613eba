"""The web pages in real Chromium (Debian's package, headless, kept on 127.0.0.1), against a live hubgate
with its in-process sync worker and the loopback fake Hub as upstream.

Screenshots of every page go to ``$HUBGATE_UI_ARTIFACTS`` (else the test's tmp folder): look at them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers.content import safetensors_bytes

from .browser import Shots, console_errors, launch, requested_urls, until
from .conftest import HOSTILE_CARD, model_files, publish, unique_repo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Shots:
    base = os.environ.get("HUBGATE_UI_ARTIFACTS")
    folder = Path(base) / request.node.name if base else tmp_path / "screenshots"
    return Shots(folder)


@pytest.fixture
def browsers(tmp_path: Path) -> Any:
    started: list[Any] = []

    def start(name: str, **kw: Any) -> Any:
        b = launch(tmp_path / f"profile-{name}", **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.quit()


def _by(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def _all(browser: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def sign_in(browser: Any, base: str, token: str) -> None:
    browser.get(f"{base}/-/login")
    _by(browser, "#token").send_keys(token)
    _by(browser, "main form button[type=submit]").click()
    until(lambda: "/-/login" not in browser.current_url, what="the sign-in to finish")


def only_loopback(urls: list[str], base: str) -> None:
    origin = urlsplit(base)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("data", "about", "blob", "chrome", "devtools"):
            continue
        assert (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", origin.port), url


def state_of(browser: Any) -> str:
    return str(browser.execute_script(
        "var s = document.querySelector('[data-live-status]'); return s ? s.getAttribute('data-state') : ''"))


def test_request_approve_sync_and_reject_in_two_browser_profiles(make_hubgate: Any, fake_hub: Any, tiny_files: Any,
                                                                 browsers: Any, shots: Shots) -> None:
    hg = make_hubgate(worker_in_process=True, sync_file_workers=1)
    base = hg.url
    published = publish(hg, fake_hub, model_files(tiny_files), unique_repo("catalogued", "acme"))
    wanted, unwanted = unique_repo("wanted", "acme"), unique_repo("unwanted", "acme")
    big = safetensors_bytes(600_000, seed=5)
    commit = fake_hub.create_repo(wanted, model_files(tiny_files, extra={"weights/big.safetensors": big}))
    fake_hub.throttle(commit.files["weights/big.safetensors"].sha256, 250_000)  # ~2.5 s of visible syncing
    fake_hub.create_repo(unwanted, model_files(tiny_files, license="other"))
    user_token, admin_token = hg.create_token("requester", "ines"), hg.admin_token

    user = browsers("requester")
    user.get(f"{base}/")  # / sends people to the pages
    until(lambda: urlsplit(user.current_url).path == "/-/", what="the redirect to /-/")
    shots(user, "catalog-anonymous")
    sign_in(user, base, user_token)
    assert "ines" in _by(user, ".who").text and not _all(user, "a[href='/-/desk']")

    # search the catalog, open a repo page
    user.get(f"{base}/-/")
    box = _by(user, "#f-q")
    box.send_keys(published["repo_id"].split("/")[1])
    box.submit()
    until(lambda: "q=" in user.current_url, what="the search")
    rows = _all(user, "table.grid tbody tr")
    assert len(rows) == 1 and published["repo_id"] in rows[0].text and published["commit"][:12] in rows[0].text
    assert "scanned" in rows[0].text and "signed" in rows[0].text
    shots(user, "catalog-search")
    rows[0].find_element("css selector", "td.repo a").click()
    until(lambda: "/-/models/" in user.current_url, what="the repo page")
    page = user.page_source
    assert "model.safetensors" in page and f"HF_ENDPOINT={base} python -c" in page and "Provenance" in page
    shots(user, "repo")

    # file a request that the fake upstream serves; the page follows it
    user.get(f"{base}/-/requests")
    _by(user, "#r-id").send_keys(wanted)
    _by(user, "#r-reason").send_keys("evaluation baseline")
    _by(user, "form[action='/-/requests'] button[type=submit]").click()
    until(lambda: "/-/requests/" in user.current_url, what="the new request's page")
    pk = int(user.current_url.rsplit("/", 1)[1])
    assert state_of(user) == "pending"
    shots(user, "request-pending")

    # the admin, in another profile, approves it from the desk
    admin = browsers("admin")
    sign_in(admin, base, admin_token)
    admin.get(f"{base}/-/desk")
    assert wanted in _by(admin, "#pending-h").find_element("xpath", "..").text
    shots(admin, "desk")
    _by(admin, f"a[href='/-/requests/{pk}']").click()
    until(lambda: admin.current_url.endswith(f"/-/requests/{pk}"), what="the review page")
    shots(admin, "review")
    _by(admin, "#approve-reason").send_keys("baseline for the eval cluster")
    _by(admin, f"form[action='/-/requests/{pk}/approve'] button").click()
    until(lambda: state_of(admin) in ("approved", "syncing", "available"), what="the approval")

    # the requester's page moves by itself: syncing (with progress), then available
    seen: list[tuple[str, str, str]] = []
    shot_taken: list[bool] = []

    def watch() -> bool:
        # one script, so that the page reloading itself (once the request settles) never splits a reading
        state, *value = user.execute_script("""
            const s = document.querySelector('[data-live-status]'), bar = document.querySelector('progress');
            return [s ? s.getAttribute('data-state') : '', bar ? String(bar.value) : '', bar ? String(bar.max) : ''];
        """)
        if not seen or seen[-1] != (state, *value):
            seen.append((state, *value))
            if state == "syncing" and not shot_taken and value[0] and value[1] and 0 < float(value[0]) < float(value[1]):
                shots(user, "request-syncing")  # once, with some progress on the bar
                shot_taken.append(True)
        return state == "available"

    until(watch, timeout=90, interval=0.1, what=f"request {pk} to become available on its own")
    states = [s for s, _, _ in seen]
    assert "syncing" in states and states[-1] == "available", seen
    partial = [(v, m) for s, v, m in seen if s == "syncing" and v and m and 0 < float(v) < float(m)]
    assert partial, f"no progress shown while syncing: {seen}"
    until(lambda: _all(user, f"a[href='/-/models/{wanted}']"), timeout=10, what="the link to the new repo")
    shots(user, "request-available")
    fake_hub.throttle(commit.files["weights/big.safetensors"].sha256, None)

    # another request, rejected with a reason the requester reads
    other = hg.request(unwanted, token=user_token)["id"]
    user.get(f"{base}/-/requests/{other}")
    admin.get(f"{base}/-/requests/{other}")
    assert "required: its licence is 'other'" in admin.page_source
    _by(admin, "#reject-reason").send_keys("licence 'other' without terms we can check")
    _by(admin, f"form[action='/-/requests/{other}/reject'] button").click()
    until(lambda: state_of(admin) == "rejected", what="the rejection")
    until(lambda: "without terms we can check" in user.page_source, timeout=20, what="the reason on the requester's page")
    assert state_of(user) == "rejected"
    shots(user, "request-rejected")
    shots(admin, "audit-trail")

    user.get(f"{base}/-/requests")
    shots(user, "my-requests")
    user.get(f"{base}/-/?q={wanted.split('/')[1]}")
    assert wanted in user.page_source
    for b in (user, admin):
        only_loopback(requested_urls(b), base)
        assert not [m for m in console_errors(b) if "Content Security Policy" in m], console_errors(b)
        assert b.execute_script("return window.__dialogs") == []


def test_a_hostile_model_card_runs_nothing(make_hubgate: Any, fake_hub: Any, tiny_files: Any, browsers: Any,
                                           shots: Shots) -> None:
    hg = make_hubgate()
    doc = publish(hg, fake_hub, model_files(tiny_files, extra={"README.md": HOSTILE_CARD}), unique_repo("hostile"))
    b = browsers("reader")
    b.get(f"{hg.url}/-/models/{doc['repo_id']}")
    card = _by(b, "article.markdown")
    assert "A model card that tries everything" in card.text and _all(b, "article.markdown table")
    from selenium.webdriver.common.action_chains import ActionChains

    for link in _all(b, "article.markdown a"):  # the neutered links: clicking one goes nowhere
        if link.text in ("click me",):
            link.click()
    ActionChains(b).move_to_element(card).perform()
    for summary in _all(b, "article.markdown summary"):
        summary.click()
    shots(b, "hostile-card")
    assert b.execute_script("return window.__pwned === undefined")
    assert b.execute_script("return window.__dialogs") == []
    assert b.execute_script("""
        const card = document.querySelector('article.markdown');
        const bad = card.querySelectorAll('script, iframe, object, embed, style, form, svg, button');
        const handlers = [...card.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on')));
        const js = [...card.querySelectorAll('[href], [src]')].filter(
            e => /^\\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('src') || ''));
        return bad.length + handlers.length + js.length;
    """) == 0
    assert b.current_url.endswith(f"/-/models/{doc['repo_id']}")
    errors = console_errors(b)
    assert not [m for m in errors if "Content Security Policy" in m or "Refused to" in m], errors
    only_loopback(requested_urls(b), hg.url)
    from selenium.common.exceptions import WebDriverException

    for elsewhere in ("http://example.com/", "https://huggingface.co/", "http://192.0.2.1/"):
        try:  # the browser's own network: nothing answers beyond 127.0.0.1
            b.get(elsewhere)
        except WebDriverException as exc:
            assert "net::ERR_" in str(exc), exc
        else:
            assert "ERR_" in b.page_source, (elsewhere, b.page_source[:300])


def test_pages_reflow_at_400_percent_zoom_and_sign_in_works_by_keyboard(make_hubgate: Any, fake_hub: Any,
                                                                          tiny_files: Any, browsers: Any,
                                                                          shots: Shots) -> None:
    from selenium.webdriver.common.keys import Keys

    hg = make_hubgate()
    doc = publish(hg, fake_hub, model_files(tiny_files), unique_repo("zoom"))
    b = browsers("keyboard")
    from selenium.webdriver.common.action_chains import ActionChains

    active = lambda: b.execute_script(
        "var e = document.activeElement; return (e.id || e.className || e.tagName) + '|' + (e.textContent || '').trim()")
    b.get(f"{hg.url}/-/")
    ActionChains(b).send_keys(Keys.TAB).perform()
    assert active().startswith("skip|Skip to content"), active()  # the first stop: skip to the content
    ActionChains(b).send_keys(Keys.ENTER).perform()
    assert active().startswith("main|"), active()
    ActionChains(b).send_keys(Keys.TAB).perform()
    assert active().startswith("f-q|"), active()  # from the content on: the catalog's search box first
    b.get(f"{hg.url}/-/")
    for _ in range(8):  # through the header to the sign-in link
        ActionChains(b).send_keys(Keys.TAB).perform()
        if active().endswith("|Sign in"):
            break
    else:
        raise AssertionError("the sign-in link is not reachable by keyboard")
    ActionChains(b).send_keys(Keys.ENTER).perform()
    until(lambda: "/-/login" in b.current_url, what="the sign-in form")
    assert active().startswith("token|"), active()  # the form puts the cursor in its only field
    ActionChains(b).send_keys(hg.admin_token, Keys.ENTER).perform()
    until(lambda: "/-/login" not in b.current_url, what="a keyboard sign-in")
    labels = b.execute_script("""
        return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id);
    """)
    assert labels == []  # every form field has a label
    # 400% zoom of a 1280x1024 screen: a 320 CSS px wide viewport; nothing may need sideways page scrolling
    b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 320, "height": 256, "deviceScaleFactor": 4,
                                                             "mobile": False})
    for name, path in (("catalog", "/-/"), ("repo", f"/-/models/{doc['repo_id']}"), ("request", f"/-/requests/{doc['id']}"),
                       ("desk", "/-/desk"), ("requests", "/-/requests")):
        b.get(hg.url + path)
        overflow = b.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, (name, overflow)
        for form in _all(b, "input:not([type=hidden]), select, textarea"):
            assert form.size["width"] <= 320, (name, form.get_attribute("name"))
        height = b.execute_script("return Math.min(document.documentElement.scrollHeight, 3000)")
        b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 320, "height": height,
                                                                 "deviceScaleFactor": 2, "mobile": False})
        path_ = shots.folder / f"zoom400-{name}.png"
        b.save_screenshot(str(path_))
        b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 320, "height": 256, "deviceScaleFactor": 4,
                                                                 "mobile": False})
    only_loopback(requested_urls(b), hg.url)
