"""Two browser profiles as two devices: one signs the other out; a copied refresh token
replayed after the grace window signs both out and shows up as a security event."""

from __future__ import annotations

import re

from .conftest import REFRESH_REUSE_GRACE, browser_tests
from .test_pages import axe_violations, horizontal_overflow

pytestmark = browser_tests

# Where a signed-out visit to /account lands (the server writes `/`, the script `%2F`).
SIGN_IN_TO_ACCOUNT = re.compile(r"/auth/login\?next=(/|%2F)account$")


def count_refresh_calls(page) -> list:
    calls = []
    page.on("request", lambda request: calls.append(request) if request.url.endswith("/auth/refresh") else None)
    return calls


def test_a_page_script_that_finds_its_device_signed_out_says_why(devices, email, screenshots):
    # The narrowest phone the pages support: the server's sentence is longer than the old one.
    laptop, phone = devices(), devices(viewport={"width": 320, "height": 640})
    laptop.register(email)
    phone.sign_in(email)
    phone.page.wait_for_url("**/account")
    phone.page.locator("[data-session-panel][data-loaded=true]").wait_for()
    phone_session = phone.session_id()

    page = laptop.page
    page.goto("/account/sessions")
    phone_row = page.locator(f'[data-session-id="{phone_session}"]')
    phone_row.locator("summary").click()
    phone_row.get_by_role("button", name="Yes, sign out").click()
    page.wait_for_url("**/account/sessions")

    # The phone's open page finds out through its script, not a navigation: it says why.
    phone.page.get_by_role("button", name="Refresh").click()
    notice = phone.page.get_by_role("alert").filter(has_text="This device was signed out from another of your devices.")
    notice.wait_for()
    assert horizontal_overflow(phone.page)[0] <= 320 and axe_violations(phone.page) == []
    phone.page.screenshot(path=screenshots / "session-signed-out-by-script-320.png", full_page=True)
    # And so does the sign-in page its link leads to.
    notice.get_by_role("link", name="Sign in again").click()
    phone.page.wait_for_url(re.compile(r"/auth/login\?next=%2Faccount&why=revoked_by_user$"))
    assert phone.page.get_by_text("signed out from another of your devices").is_visible()


def test_one_device_signs_the_other_out(devices, email, screenshots):
    laptop, phone = devices(), devices()
    laptop.register(email)
    laptop_session = laptop.session_id()

    phone.sign_in(email)
    phone.page.wait_for_url("**/account")
    phone_session = phone.session_id()
    # A second tab on the phone stays on the account page, its panels loaded.
    phone_tab = phone.new_page()
    phone_tab.goto("/account")
    phone_tab.locator("[data-session-panel][data-loaded=true]").wait_for()

    page = laptop.page
    page.goto("/account/sessions")
    rows = page.locator("[data-session-id]")
    assert rows.count() == 2
    current = page.locator('[data-current="true"]')
    assert current.count() == 1 and current.get_attribute("data-session-id") == laptop_session
    phone_row = page.locator(f'[data-session-id="{phone_session}"]')
    assert phone_row.get_attribute("data-current") is None
    # Signing a device out asks first: the button opens a confirmation holding the real one.
    phone_row.locator("summary").click()
    page.screenshot(path=screenshots / "sessions-confirm.png", full_page=True)
    phone_row.get_by_role("button", name="Yes, sign out").click()
    page.wait_for_url("**/account/sessions")
    assert page.locator(f'[data-session-id="{phone_session}"]').count() == 0
    assert page.locator('[data-current="true"]').count() == 1

    # The phone's next navigation lands on sign-in, saying why (webapp/auth/hooks.py).
    phone.page.get_by_role("link", name="Account", exact=True).click()
    phone.page.wait_for_url(SIGN_IN_TO_ACCOUNT)
    assert phone.page.get_by_text("signed out from another of your devices").is_visible()
    assert phone.signed_in_email() is None

    # Its other tab's next script request cannot renew the session: the page says so, once.
    refresh_calls = count_refresh_calls(phone_tab)
    phone_tab.get_by_role("button", name="Refresh").click()
    notice = phone_tab.get_by_role("alert").filter(has_text="Your session has expired")
    notice.wait_for()
    assert len(refresh_calls) == 1  # two API requests failed at once; one refresh call
    assert refresh_calls[0].response().status == 401
    assert phone_tab.get_by_role("button", name="Refresh").is_disabled()
    sign_in_again = notice.get_by_role("link", name="Sign in again")
    assert sign_in_again.get_attribute("href") == "/auth/login?next=%2Faccount"
    phone_tab.screenshot(path=screenshots / "session-expired.png", full_page=True)

    # Signing in again from the notice comes back to the page.
    sign_in_again.click()
    phone_tab.wait_for_url(SIGN_IN_TO_ACCOUNT)
    phone.sign_in(email, page=phone_tab)
    phone_tab.wait_for_url("**/account")
    assert phone.signed_in_email(phone_tab) == email


def test_replayed_refresh_token_signs_both_out_and_is_reported(devices, email, live_server):
    victim = devices()
    victim.register(email)
    stolen = dict(victim.cookies()["refresh_token"])

    victim.wait_for_access_expiry()
    victim.page.get_by_role("link", name="Account", exact=True).click()
    victim.page.wait_for_url("**/account")
    assert victim.cookie_value("refresh_token") != stolen["value"]

    # The thief replays the copy taken before that rotation, after the grace window: the
    # server's clock moves past it rather than the test sleeping through it.
    thief = devices()
    thief.context.add_cookies([stolen])
    live_server.clock.advance(REFRESH_REUSE_GRACE + 1)
    thief.page.goto("/account")
    thief.page.wait_for_url(SIGN_IN_TO_ACCOUNT)
    assert "refresh_token" not in thief.cookies()

    # The whole session ended: the victim is signed out on their next click too.
    victim.page.get_by_role("link", name="Account", exact=True).click()
    victim.page.wait_for_url(SIGN_IN_TO_ACCOUNT)
    assert victim.signed_in_email() is None
    assert "refresh_token" not in victim.cookies()

    victim.sign_in(email)
    victim.page.wait_for_url("**/account")
    activity = victim.page.locator("[data-events] [data-kind=refresh_token_reused]")
    activity.wait_for()
    assert "reused" in activity.inner_text()

    victim.page.goto("/account/sessions")
    assert victim.page.get_by_test_id("reuse-alert").is_visible()
    reused = victim.page.locator("[data-event][data-kind=refresh_token_reused]").first
    assert "reused" in reused.inner_text() and reused.is_visible()
