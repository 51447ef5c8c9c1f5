"""Every page in real Chromium, as a phone and as a desktop, light and dark: no sideways
scrolling (WCAG 1.4.10, reflow down to 320 px), no axe-core violations, a screenshot of
each; and signing a device out with the keyboard alone, confirmation included.

Screenshots go to tests/browser/screenshots/ (ignored by git). With UPDATE_SCREENSHOTS=1
the devices page is also written to docs/devices-desktop.png and docs/devices-phone.png,
the README's pictures; a plain run leaves docs/ alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webapp import accounts, recovery
from webapp.extensions import db
from webapp.recovery import LinkPurpose

from .conftest import Device, browser_tests

pytestmark = browser_tests

DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"

PHONE, DESKTOP = 390, 1280
ACCOUNT_EMAIL = "sam@example.com"
WIDTHS = {"phone": PHONE, "desktop": DESKTOP}
SIGNED_OUT_PAGES = {
    "landing": "/",
    "sign-in": "/auth/login",
    "register": "/auth/register",
    "forgot-password": "/auth/forgot",
    "dead-link": "/auth/reset/1.0.a-link-that-expired-long-ago-or-never-was-ours",
}
# Pages behind an emailed link: the path is made for the account when the page is opened.
LINK_PAGES = {"reset-password": LinkPurpose.RESET, "secure-account": LinkPurpose.SECURE}
SIGNED_IN_PAGES = {"account": "/account", "devices": "/account/sessions", "password": "/account/password"}
PAGES = {**SIGNED_OUT_PAGES, **dict.fromkeys(LINK_PAGES), **SIGNED_IN_PAGES}

# Real browsers' User-Agents, so the devices page shows what a person would see.
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"


@pytest.fixture(scope="module")
def account(browser, live_server, tmp_path_factory):
    """One account signed in on three devices: this Chrome on macOS (whose pages the tests
    look at), an iPhone and a Windows laptop. Kept for the module; the keyboard test
    signs out a device of its own."""
    email = ACCOUNT_EMAIL
    this = Device(browser, live_server, user_agent=CHROME_MAC)
    this.register(email)
    others = [Device(browser, live_server, user_agent=agent) for agent in (SAFARI_IPHONE, FIREFOX_WINDOWS)]
    for other in others:
        other.sign_in(email)
        other.page.wait_for_url("**/account")
    yield this
    for device in (this, *others):
        device.close()


def open_page(browser, live_server, account, name: str, width: int, scheme: str = "light"):
    """A new tab of the right width and colour scheme on page `name`, signed in for the
    account pages (the account's cookies), signed out for the others."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": width, "height": 800},
        color_scheme=scheme,
        user_agent=CHROME_MAC,
    )
    if name in SIGNED_IN_PAGES:
        context.add_cookies(account.context.cookies(live_server.url))
    page = context.new_page()
    page.goto(link_path(live_server, ACCOUNT_EMAIL, LINK_PAGES[name]) if name in LINK_PAGES else PAGES[name])
    page.wait_for_load_state("networkidle")
    if name == "account":
        page.locator("[data-session-panel][data-loaded=true]").wait_for()
    # The cookies may have rotated: hand them back so the account stays signed in.
    if name in SIGNED_IN_PAGES:
        account.context.add_cookies(context.cookies(live_server.url))
    return context, page


def link_path(live_server, email: str, purpose: LinkPurpose) -> str:
    """The path of a live link of `purpose` for the account, as its email would hold."""
    app = live_server.app
    with app.app_context():
        user = accounts.find_user(db.session, email)
        token = recovery.make_link_token(
            user, purpose, policy=app.extensions["recovery_policy"], now=app.config["CLOCK"]()
        )
    prefix = "/auth/reset/" if purpose is LinkPurpose.RESET else "/auth/secure/"
    return prefix + token


def horizontal_overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def axe_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): "
        + "; ".join(node["target"][0] if node["target"] else "?" for node in violation["nodes"])
        for violation in results.response["violations"]
    ]


@pytest.mark.parametrize("width_name", list(WIDTHS))
@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_fits_the_screen_and_passes_axe(browser, live_server, account, screenshots, name, width_name):
    context, page = open_page(browser, live_server, account, name, WIDTHS[width_name])
    try:
        scroll_width, inner_width = horizontal_overflow(page)
        assert scroll_width <= inner_width, f"{name} scrolls sideways at {inner_width}px: {scroll_width}px wide"
        assert axe_violations(page) == []
        page.screenshot(path=screenshots / f"{name}-{width_name}.png", full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_reflows_at_320_px(browser, live_server, account, name):
    context, page = open_page(browser, live_server, account, name, 320)
    try:
        scroll_width, inner_width = horizontal_overflow(page)
        assert scroll_width <= inner_width, f"{name} scrolls sideways at 320px: {scroll_width}px wide"
    finally:
        context.close()


@pytest.mark.parametrize("width_name", list(WIDTHS))
@pytest.mark.parametrize("name", list(PAGES))
def test_dark_scheme_fits_and_passes_axe(browser, live_server, account, screenshots, name, width_name):
    context, page = open_page(browser, live_server, account, name, WIDTHS[width_name], scheme="dark")
    try:
        # The dark palette really applies (custom properties under prefers-color-scheme).
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert background == "rgb(15, 18, 23)"
        scroll_width, inner_width = horizontal_overflow(page)
        assert scroll_width <= inner_width
        assert axe_violations(page) == []
        page.screenshot(path=screenshots / f"{name}-{width_name}-dark.png", full_page=True)
    finally:
        context.close()


def test_devices_are_cards_on_a_phone_and_rows_on_a_desktop(browser, live_server, account):
    layouts = {}
    for width_name, width in WIDTHS.items():
        context, page = open_page(browser, live_server, account, "devices", width)
        try:
            rows = page.locator("[data-session-id]")
            assert rows.count() == 3
            current = page.locator('[data-current="true"]')
            assert current.count() == 1
            box, facts = current.bounding_box(), current.locator(".device-facts").bounding_box()
            name = current.locator(".device-name").bounding_box()
            # A card: the facts sit under the device's name. A row: beside it.
            layouts[width_name] = "card" if facts["y"] >= name["y"] + name["height"] - 1 else "row"
            assert box["width"] <= width
        finally:
            context.close()
    assert layouts == {"phone": "card", "desktop": "row"}


def test_exact_times_are_shown_in_the_viewers_time_zone(browser, live_server, account):
    context = browser.new_context(base_url=live_server.url, timezone_id="Asia/Kolkata", locale="en-GB")
    context.add_cookies(account.context.cookies(live_server.url))
    page = context.new_page()
    try:
        page.goto("/account/sessions")
        exact = page.locator('[data-current="true"] [data-field="signed-in"] time[data-exact]')
        exact.and_(page.locator("[data-local=true]")).wait_for()
        assert "UTC" not in exact.inner_text()
        assert "GMT+5:30" in exact.inner_text() or "IST" in exact.inner_text()
        account.context.add_cookies(context.cookies(live_server.url))
    finally:
        context.close()


def test_the_account_page_states_its_facts_without_javascript(browser, live_server, account):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    context.add_cookies(account.context.cookies(live_server.url))
    page = context.new_page()
    try:
        page.goto("/account")
        panel = page.locator("[data-session-panel]")
        assert "…" not in panel.inner_text()
        assert page.get_by_test_id("expires-at").inner_text().startswith("in 30 days")
        assert page.locator("[data-events] [data-kind=signed_in]").count() >= 1
        assert not page.get_by_role("button", name="Refresh").is_visible()
        account.context.add_cookies(context.cookies(live_server.url))
    finally:
        context.close()


def test_keyboard_only_sign_out_of_another_device_with_confirmation(devices, email):
    laptop = devices(user_agent=CHROME_MAC)
    laptop.register(email)
    phone = devices(user_agent=SAFARI_IPHONE)
    phone.sign_in(email)
    phone.page.wait_for_url("**/account")
    phone_id = phone.session_id()

    page = laptop.page
    page.goto("/account/sessions")
    target = f'[data-session-id="{phone_id}"] summary'

    def focused(selector: str) -> bool:
        return page.evaluate("(selector) => document.activeElement === document.querySelector(selector)", selector)

    for _ in range(40):
        page.keyboard.press("Tab")
        if focused(target):
            break
    else:
        raise AssertionError("Tab never reached the phone's sign-out button")
    assert page.evaluate("document.activeElement.textContent.replace(/\\s+/g, ' ').trim()") == (
        "Sign out Safari on iPhone"
    )
    page.keyboard.press("Enter")
    # The confirmation opened; nothing was signed out yet.
    confirm = page.locator(f'[data-session-id="{phone_id}"] details[open]')
    confirm.wait_for()
    assert phone.page.request.get("/api/me").ok
    page.keyboard.press("Tab")
    assert focused(f'[data-session-id="{phone_id}"] details form button[type=submit]')
    page.keyboard.press("Enter")
    page.wait_for_url("**/account/sessions")
    page.get_by_role("status").filter(has_text="signed out").wait_for()
    assert page.locator(f'[data-session-id="{phone_id}"]').count() == 0
    assert page.locator('[data-current="true"]').count() == 1
    assert phone.page.request.get("/api/me").status == 401


def test_readme_screenshots_of_the_devices_page(browser, live_server, account):
    """docs/devices-*.png, the README's pictures: written only with UPDATE_SCREENSHOTS=1."""
    if not UPDATE_SCREENSHOTS:
        pytest.skip("set UPDATE_SCREENSHOTS=1 to rewrite docs/devices-desktop.png and docs/devices-phone.png")
    DOCS.mkdir(exist_ok=True)
    for width_name, width in (("desktop", 1024), ("phone", PHONE)):
        context, page = open_page(browser, live_server, account, "devices", width)
        try:
            # Open the iPhone's confirmation, so the picture shows that step too.
            page.locator("[data-session-id]:not([data-current]) summary").first.click()
            page.locator("main").screenshot(path=DOCS / f"devices-{width_name}.png")
        finally:
            context.close()
