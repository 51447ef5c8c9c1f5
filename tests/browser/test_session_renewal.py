"""After the access token expires, navigation and scripts keep the user signed in: the
server rotates silently, parallel requests share one rotation, and the page's script
refreshes and retries once on a 401 (static/js/session-fetch.js)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import SecurityEvent, Session

from .conftest import browser_tests

pytestmark = browser_tests

MODULE = Path(__file__).resolve().parents[2] / "static" / "js" / "session-fetch.js"


def session_row(live_server, session_id: str) -> Session:
    with live_server.app.app_context():
        return db.session.execute(select(Session).where(Session.public_id == session_id)).scalar_one()


def event_kinds(live_server, session_id: str) -> list[str]:
    with live_server.app.app_context():
        return list(
            db.session.execute(
                select(SecurityEvent.kind).where(SecurityEvent.session_public_id == session_id)
            ).scalars()
        )


def test_clicking_a_link_after_access_expiry_keeps_the_user_signed_in(device, email):
    device.register(email)
    page = device.page
    refresh_before = device.cookie_value("refresh_token")
    device.wait_for_access_expiry()

    page.get_by_role("link", name="Webapp").click()
    page.wait_for_url(device.server("/"))
    assert device.signed_in_email() == email
    assert page.get_by_text(f"Signed in as {email}").is_visible()
    cookies = device.cookies()
    assert "access_token" in cookies
    assert cookies["refresh_token"]["value"] != refresh_before
    assert cookies["refresh_token"]["httpOnly"] is True

    page.get_by_role("link", name="Account", exact=True).click()
    page.wait_for_url("**/account")
    assert page.get_by_test_id("account-email").inner_text() == email


def test_a_page_load_firing_parallel_api_requests_after_expiry_ends_signed_in(device, email, live_server):
    device.register(email)
    page = device.page
    session_id = device.session_id()
    page.locator("[data-session-panel][data-loaded=true]").wait_for()
    device.wait_for_access_expiry()
    refresh_before = device.cookie_value("refresh_token")
    counter_before = session_row(live_server, session_id).counter

    # A page of this origin that, as it loads, fires six API requests at once. It is served
    # by the test, not the app, so nothing rotates the refresh cookie before the requests
    # do: all six carry the same expired session and race to renew it.
    refresh_calls = []
    page.on("request", lambda request: refresh_calls.append(request) if request.url.endswith("/auth/refresh") else None)
    page.route(
        "**/parallel-test",
        lambda route: route.fulfill(
            content_type="text/html",
            body="""<!doctype html><meta name="csrf-token" content="unused"><main></main>
            <script type="module">
              import { sessionFetch } from "/static/js/session-fetch.js";
              const urls = ["/api/me", "/api/session", "/api/security-events", "/api/me", "/api/session", "/api/me"];
              const responses = await Promise.all(urls.map((url) => sessionFetch(url)));
              document.body.dataset.statuses = JSON.stringify(responses.map((response) => response.status));
            </script>""",
        ),
    )
    page.goto("/parallel-test")
    page.locator("body[data-statuses]").wait_for(state="attached")
    assert json.loads(page.locator("body").get_attribute("data-statuses")) == [200] * 6
    assert refresh_calls == []  # the server's grace window served them all: no 401 to recover from

    row = session_row(live_server, session_id)
    assert row.revoked_at is None and row.counter == counter_before + 1  # one rotation for six requests
    assert "refresh_token_reused" not in event_kinds(live_server, session_id)
    assert device.cookie_value("refresh_token") != refresh_before

    page.goto("/account")
    assert page.get_by_test_id("account-email").inner_text() == email


def test_script_refreshes_once_for_concurrent_401s_and_retries(device, email):
    device.register(email)
    page = device.page
    page.locator("[data-session-panel][data-loaded=true]").wait_for()
    refresh_before = device.cookie_value("refresh_token")
    csrf_token = page.locator("meta[name=csrf-token]").get_attribute("content")

    # The first three requests to /api/me are answered 401 as if the access token had
    # just been refused; the retries reach the server.
    refused = []

    def refuse_three(route):
        if len(refused) < 3:
            refused.append(route.request.url)
            route.fulfill(status=401, content_type="application/json", body='{"error": "not_signed_in"}')
        else:
            route.continue_()

    refresh_calls = []
    page.on("request", lambda request: refresh_calls.append(request) if request.url.endswith("/auth/refresh") else None)
    page.route("**/api/me", refuse_three)
    statuses = page.evaluate(
        """async () => {
            const { sessionFetch } = await import("/static/js/session-fetch.js");
            const responses = await Promise.all([1, 2, 3].map(() => sessionFetch("/api/me")));
            return Promise.all(responses.map(async (response) => [response.status, (await response.json()).email]));
        }"""
    )
    assert statuses == [[200, email]] * 3
    assert len(refused) == 3
    assert len(refresh_calls) == 1
    assert refresh_calls[0].method == "POST"
    assert refresh_calls[0].headers["x-csrftoken"] == csrf_token
    assert refresh_calls[0].response().status == 204
    assert device.cookie_value("refresh_token") != refresh_before
    assert page.locator("[data-session-expired]").count() == 0


def test_script_retries_only_once(device, email):
    device.register(email)
    page = device.page
    page.locator("[data-session-panel][data-loaded=true]").wait_for()
    seen = []

    def always_refuse(route):
        seen.append(route.request.url)
        route.fulfill(status=401, content_type="application/json", body='{"error": "not_signed_in"}')

    page.route("**/api/me", always_refuse)
    outcome = page.evaluate(
        """async () => {
            const { sessionFetch } = await import("/static/js/session-fetch.js");
            try { await sessionFetch("/api/me"); return "resolved"; } catch (error) { return error.name; }
        }"""
    )
    assert outcome == "SessionExpiredError"
    assert len(seen) == 2  # the request and one retry, never a loop
    assert page.get_by_role("alert").filter(has_text="Your session has expired").is_visible()


def test_the_module_never_touches_tokens():
    code_lines = [line for line in MODULE.read_text().splitlines() if not line.lstrip().startswith(("//", "*", "/*"))]
    source = "\n".join(code_lines)
    for forbidden in ("document.cookie", "localStorage", "sessionStorage", "access_token", "refresh_token"):
        assert forbidden not in source, forbidden
