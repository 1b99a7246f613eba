"""The web pages' guards, over real HTTP on 127.0.0.1: sanitised cards, CSRF, sessions, roles, headers."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from api.ui.render import render_card
from api.ui.security import CSP, Keys

from .conftest import HOSTILE_CARD, model_files, publish, unique_repo

# -- model cards


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(html)
    return found


def test_hostile_card_renders_without_scripts_handlers_js_urls_or_frames() -> None:
    html = render_card(HOSTILE_CARD.decode(), "/acme/x/resolve/" + "a" * 40)
    tags = _tags(html)
    names = {t for t, _ in tags}
    assert not names & {"script", "iframe", "object", "embed", "style", "form", "button", "svg", "input", "link",
                        "meta", "base"}, names
    for tag, attrs in tags:
        for name, value in attrs:
            assert not name.startswith("on") and name not in ("style", "srcdoc", "formaction"), (tag, name)
            if name in ("href", "src"):
                assert value and value.startswith(("https:", "http:", "mailto:", "#", "/acme/x/resolve/")), value
    assert "<strong>markdown</strong>" in html and "<table>" in html  # the card is still a card
    assert 'href="/acme/x/resolve/' + "a" * 40 + '/docs/usage.md"' in html  # relative links stay in the repo


def test_card_links_only_http_https_mailto_and_never_escape_the_repo() -> None:
    html = render_card("[a](https://ok.example) [b](mailto:x@y.z) [c](data:text/html,hi) [d](vbscript:x) "
                       "[e](../../../etc/passwd) ![f](/registry/v1/tokens) [g](#anchor)", "/r/resolve/c")
    assert 'href="https://ok.example"' in html and 'href="mailto:x@y.z"' in html and 'href="#anchor"' in html
    urls = [v for _, attrs in _tags(html) for k, v in attrs if k in ("href", "src")]
    assert urls == ["https://ok.example", "mailto:x@y.z", "#anchor"]  # data:, vbscript:, ../ and /registry dropped


def test_front_matter_is_metadata_not_card_text() -> None:
    html = render_card("---\nlicense: mit\n---\n# Title\n", None)
    assert "license" not in html and "<h1>Title</h1>" in html


# -- headers


@pytest.mark.parametrize("path", ["/-/", "/-/login", "/-/no-such-page", "/-/static/hubgate.css"])
def test_every_answer_has_a_strict_csp_and_frame_deny(hubgate: Any, web: Any, path: str) -> None:
    r = web(hubgate).get(path)
    csp = r.headers["content-security-policy"]
    assert csp == CSP and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    if path.endswith("no-such-page"):
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]


def test_pages_have_no_inline_script_or_style(hubgate: Any, fake_hub: Any, tiny_files: Any, web: Any) -> None:
    doc = publish(hubgate, fake_hub, model_files(tiny_files))
    w = web(hubgate)
    w.login(hubgate.admin_token)
    for path in ("/-/", f"/-/models/{doc['repo_id']}", f"/-/requests/{doc['id']}", "/-/requests", "/-/desk",
                 "/-/login"):
        html = w.get(path).text
        assert not re.search(r"<script(?![^>]*\ssrc=)", html), path  # every script is a file
        assert "<style" not in html and " style=" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path


def test_root_sends_people_to_the_pages_and_hub_paths_still_work(hubgate: Any, fake_hub: Any, tiny_files: Any,
                                                                   web: Any) -> None:
    doc = publish(hubgate, fake_hub, model_files(tiny_files))
    w = web(hubgate)
    r = w.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/-/"
    r = w.get(f"/{doc['repo_id']}/resolve/main/config.json")
    assert r.status_code == 200 and r.headers["x-repo-commit"] == doc["commit"]
    assert w.get("/-/models/" + doc["repo_id"]).status_code == 200
    assert w.get("/-").status_code == 404  # not a repo, not a page: the Hub's own not-found


# -- sign-in and sessions


def test_sign_in_cookie_is_httponly_strict_and_never_the_token(hubgate: Any, web: Any) -> None:
    token = hubgate.create_token("requester", "carol")
    w = web(hubgate)
    r = w.login(token)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("hubgate_session=")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Secure" not in cookie  # plain http here
    value = cookie.split(";")[0].split("=", 1)[1]
    assert token not in value and token.split("_")[-1][:12] not in value
    page = w.get("/-/requests").text
    assert "carol" in page and token not in page


def test_sign_in_over_https_sets_a_secure_host_cookie(make_hubgate: Any, web: Any) -> None:
    hg = make_hubgate(public_url="https://hubgate.example")
    w = web(hg)
    page = w.get("/-/login")
    pre = page.headers["set-cookie"]
    assert pre.startswith("__Host-hubgate_login=") and "Secure" in pre
    nonce = pre.split(";")[0].split("=", 1)[1]
    csrf = re.search(r'name="csrf" value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
    w.client.cookies.clear()  # httpx keeps Secure cookies away from http://: send it as the TLS proxy would
    r = w.client.post("/-/login", data={"csrf": csrf, "token": hg.admin_token, "next": "/-/"},
                      headers={"cookie": f"__Host-hubgate_login={nonce}"})
    assert r.status_code == 303, r.text[:300]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-hubgate_session=") and "Secure" in cookie and "Path=/" in cookie
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()


def test_a_bad_token_is_refused_and_a_forged_cookie_is_no_session(hubgate: Any, web: Any) -> None:
    w = web(hubgate)
    r = w.login("hg_notatoken_000000000000", expect=401)
    assert "not a valid hubgate token" in r.text
    other = Keys(b"another instance's key, not this one's")
    w.client.cookies.set("hubgate_session", other.seal({"v": 1, "tok": hubgate.admin_token, "iat": 2**31, "sid": "x"}))
    assert w.get("/-/desk").status_code == 303  # to the sign-in form: the cookie opened nothing


def test_revoking_the_token_ends_the_web_session_at_once(hubgate: Any, web: Any) -> None:
    token = hubgate.create_token("admin", "dave")
    w = web(hubgate)
    w.login(token)
    assert w.get("/-/desk").status_code == 200
    token_id = next(t["token_id"] for t in hubgate.api("GET", "/tokens").json() if t["name"] == "dave")
    assert hubgate.api("DELETE", f"/tokens/{token_id}").status_code == 200
    r = w.get("/-/desk")
    assert r.status_code == 303 and r.headers["location"].startswith("/-/login")
    assert 'hubgate_session=""' in r.headers["set-cookie"]  # the dead session's cookie goes


def test_sign_out_needs_its_csrf_token_and_drops_the_cookie(hubgate: Any, web: Any) -> None:
    w = web(hubgate)
    w.login(hubgate.admin_token)
    assert w.post("/-/logout", csrf=False).status_code == 403
    r = w.post("/-/logout")
    assert r.status_code == 303 and "hubgate_session=\"\"" in r.headers["set-cookie"]


def test_sign_in_only_redirects_inside_the_pages(hubgate: Any, web: Any) -> None:
    w = web(hubgate)
    for evil in ("https://evil.example/", "//evil.example/", "/-//evil.example", "/registry/v1/tokens"):
        page = w.get("/-/login", params={"next": evil})
        csrf = re.search(r'name="csrf" value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
        r = w.client.post("/-/login", data={"csrf": csrf, "token": hubgate.admin_token, "next": evil})
        assert r.headers["location"] == "/-/", evil


# -- CSRF


def test_posts_without_a_csrf_token_are_refused(hubgate: Any, fake_hub: Any, tiny_files: Any, web: Any) -> None:
    repo_id = unique_repo("csrf")
    fake_hub.create_repo(repo_id, model_files(tiny_files))
    pk = hubgate.request(repo_id)["id"]
    w = web(hubgate)
    w.login(hubgate.admin_token)
    for path in (f"/-/requests/{pk}/approve", f"/-/requests/{pk}/reject", "/-/requests", "/-/logout"):
        r = w.post(path, {"reason": "x", "repo_id": "acme/other"}, csrf=False)
        assert r.status_code == 403 and "CSRF" in r.text, path
        r = w.post(path, {"reason": "x", "repo_id": "acme/other"}, csrf="0" * 64)
        assert r.status_code == 403, path
    assert hubgate.get_request(pk)["state"] == "pending"
    # the sign-in form too: without the token of its own pre-sign-in cookie
    r = web(hubgate).client.post("/-/login", data={"token": hubgate.admin_token, "next": "/-/"})
    assert r.status_code == 403


def test_a_cross_site_post_is_refused_even_with_the_token(hubgate: Any, fake_hub: Any, tiny_files: Any,
                                                          web: Any) -> None:
    repo_id = unique_repo("xsite")
    fake_hub.create_repo(repo_id, model_files(tiny_files))
    pk = hubgate.request(repo_id)["id"]
    w = web(hubgate)
    w.login(hubgate.admin_token)
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
        r = w.post(f"/-/requests/{pk}/approve", {"reason": "ok"}, headers=headers)
        assert r.status_code == 403, headers
    assert hubgate.get_request(pk)["state"] == "pending"
    r = w.post(f"/-/requests/{pk}/approve", {"reason": "ok"}, headers={"origin": hubgate.url})
    assert r.status_code == 303
    assert hubgate.get_request(pk)["state"] == "approved"


def test_forms_are_capped_and_only_urlencoded_forms_count(hubgate: Any, web: Any) -> None:
    w = web(hubgate)
    w.login(hubgate.admin_token)
    r = w.post("/-/requests", {"reason": "x" * 70000})
    assert r.status_code == 413 and "larger than" in r.text  # refused at the edge (api/edge.py), before the page
    r = w.client.post("/-/requests", json={"csrf": w.csrf, "repo_id": "a/b"})
    assert r.status_code == 403  # not a form: no CSRF field was read


# -- roles and privacy


def test_a_reader_never_sees_decisions_and_the_server_refuses_them(hubgate: Any, fake_hub: Any, tiny_files: Any,
                                                                   web: Any) -> None:
    repo_id = unique_repo("roles")
    fake_hub.create_repo(repo_id, model_files(tiny_files))
    requester = hubgate.create_token("requester", "erin")
    pk = hubgate.request(repo_id, token=requester)["id"]
    w = web(hubgate)
    w.login(requester)
    page = w.get(f"/-/requests/{pk}").text  # her own request: she sees it, without any decision form
    assert f"Request #{pk}" in page
    for action in ("approve", "reject", "retry", "code", "override"):
        assert f"/requests/{pk}/{action}" not in page
    assert "Approval desk" not in w.get("/-/").text
    assert w.get("/-/desk").status_code == 403
    r = w.post(f"/-/requests/{pk}/approve", {"reason": "self-approval"})  # a valid CSRF token, the wrong role
    assert r.status_code == 403 and "admin" in r.text
    assert hubgate.get_request(pk)["state"] == "pending"
    denied = hubgate.api("GET", "/audit", params={"action": "admin.denied"}).json()
    assert any(e["detail"].get("path") == f"/-/requests/{pk}/approve" and e["actor"] == "erin" for e in denied)
    reader = hubgate.create_token("reader", "frank")
    w2 = web(hubgate)
    w2.login(reader)
    assert w2.get(f"/-/requests/{pk}").status_code == 404  # not his: it does not exist for him
    assert w2.get(f"/-/requests/{pk}/status").status_code == 404
    assert repo_id not in w2.get("/-/requests").text
    assert w2.post("/-/requests", {"repo_id": unique_repo("x")}).status_code == 403  # readers cannot request


def test_private_repo_is_absent_and_gated_repo_is_marked_without_content(hubgate: Any, fake_hub: Any,
                                                                          tiny_files: Any, web: Any) -> None:
    private = publish(hubgate, fake_hub, model_files(tiny_files), unique_repo("secret"))["repo_id"]
    gated = publish(hubgate, fake_hub, model_files(tiny_files, extra={"gated-only.txt": b"x"}),
                    unique_repo("gated"))["repo_id"]
    for repo_id, visibility in ((private, "private"), (gated, "gated")):
        r = hubgate.api("PUT", f"/repos/model/{repo_id}/visibility", json={"visibility": visibility})
        assert r.status_code == 200, r.text
    anon = web(hubgate)
    catalog = anon.get("/-/").text
    assert private not in catalog and gated in catalog and "gated" in catalog
    assert anon.get(f"/-/models/{private}").status_code == 404
    page = anon.get(f"/-/models/{gated}")
    assert page.status_code == 403 and "gated-only.txt" not in page.text and "restricted" in page.text
    assert anon.get(f"/-/models/{gated}/-/signature/" + "0" * 40).status_code in (401, 403)
    admin = web(hubgate)
    admin.login(hubgate.admin_token)
    assert private in admin.get("/-/").text
    assert "gated-only.txt" in admin.get(f"/-/models/{gated}").text


def test_anonymous_reading_off_means_sign_in_first(make_hubgate: Any, web: Any) -> None:
    hg = make_hubgate(anonymous_read=False)
    w = web(hg)
    r = w.get("/-/?q=x")
    assert r.status_code == 303 and r.headers["location"] == "/-/login?next=/-/%3Fq%3Dx"
    w.login(hg.admin_token)
    assert w.get("/-/").status_code == 200


def test_code_view_shows_the_file_as_escaped_text_to_admins_only(hubgate: Any, fake_hub: Any, tiny_files: Any,
                                                                 web: Any) -> None:
    code = b"# </code></pre><script>window.__pwned=1</script>\nclass X:\n    pass\n"
    files = model_files(tiny_files, remote_code=True)
    files["modeling_x.py"] = files["modeling_x.py"] + code
    repo_id = unique_repo("code")
    fake_hub.create_repo(repo_id, files)
    doc = hubgate.request(repo_id)
    hubgate.approve(doc["id"])
    hubgate.sync()
    assert hubgate.get_request(doc["id"])["state"] == "blocked"
    w = web(hubgate)
    w.login(hubgate.admin_token)
    page = w.get(f"/-/requests/{doc['id']}/files/modeling_x.py")
    assert page.status_code == 200
    assert "<script>window.__pwned" not in page.text and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.text
    requester = web(hubgate)
    requester.login(hubgate.create_token("requester"))
    assert requester.get(f"/-/requests/{doc['id']}/files/modeling_x.py").status_code == 403
