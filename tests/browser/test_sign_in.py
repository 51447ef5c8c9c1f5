"""A person creates an account, signs out and in through the forms; the tokens stay
out of reach of scripts; the back button after sign-out shows nothing of the account."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .conftest import ACCESS_TOKEN_TTL, browser_tests

pytestmark = browser_tests

AUTH_COOKIES = ("access_token", "refresh_token")


def test_register_and_sign_in_through_the_forms(device, email, screenshots, live_server):
    device.register(email)
    page = device.page
    assert page.get_by_role("status").filter(has_text="Welcome!").is_visible()
    assert device.signed_in_email() == email

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/auth/login")
    assert device.signed_in_email() is None
    assert page.get_by_text("You have signed out.").is_visible()
    page.get_by_label("Email").press_sequentially(email)
    page.get_by_label("Password").press_sequentially("not my password")
    page.get_by_role("button", name="Sign in").click()
    incorrect = page.get_by_role("alert").filter(has_text="Incorrect email or password.")
    incorrect.wait_for()  # the click returns once the answer starts to load, maybe not parsed yet
    assert incorrect.is_visible()
    page.screenshot(path=screenshots / "sign-in.png", full_page=True)

    page.get_by_label("Email").fill("")
    page.get_by_label("Password").fill("")
    # "in 30 days" is rounded to the second: no time may pass between the sign-in and the
    # panel reading the session's end, neither on the server nor in the page.
    device.context.clock.set_fixed_time(datetime.now(timezone.utc))
    with live_server.clock.frozen():
        device.sign_in(email, remember=True)
        page.wait_for_url("**/account")
        assert device.signed_in_email() == email
        assert page.get_by_test_id("account-email").inner_text() == email
        # The live panels load through the JSON API.
        page.locator("[data-session-panel][data-loaded=true]").wait_for()
    assert page.get_by_test_id("expires-at").inner_text().startswith("in 30 days")
    assert page.locator("[data-events] [data-kind=signed_in]").count() == 2
    assert page.locator("[data-events] [data-kind=signed_out]").count() == 1
    page.screenshot(path=screenshots / "account.png", full_page=True)


def test_scripts_cannot_see_the_tokens_and_cookies_are_httponly_lax(device, email):
    device.register(email)
    assert device.page.evaluate("document.cookie") == ""
    cookies = device.cookies()
    for name in (*AUTH_COOKIES, "session"):
        assert cookies[name]["httpOnly"] is True, name
        assert cookies[name]["sameSite"] == "Lax", name
        assert cookies[name]["path"] == "/", name
        assert cookies[name]["secure"] is False, name  # plain http on 127.0.0.1 in tests
        assert cookies[name]["domain"] == "127.0.0.1", name  # host-only: no Domain attribute
    # Registration is not "remember me": the refresh cookie ends with the browser.
    assert cookies["refresh_token"]["expires"] == -1
    assert 0 < cookies["access_token"]["expires"] - time.time() <= ACCESS_TOKEN_TTL


def test_sign_out_then_back_button_shows_no_account_data(device, email):
    device.register(email)
    page = device.page
    session_id = device.session_id()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/auth/login")

    page.go_back()
    page.wait_for_load_state()
    # The account page was `no-store`: going back asks the server again, which says
    # "sign in" instead of showing the page from a cache.
    assert "/auth/login?next=" in page.url
    content = page.content()
    assert email not in content and session_id not in content
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert not any(name in device.cookies() for name in AUTH_COOKIES)
