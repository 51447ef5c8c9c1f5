"""A person who forgot their password asks for a link from the sign-in page, gets it by
email (a real SMTP server), chooses a new password on the link's page and signs in with
it; the old password no longer works, the link works once, and the device that was
signed in is signed out.

The server here is one of this module's own: it sends email over SMTP to an aiosmtpd
server on 127.0.0.1, and builds links from PUBLIC_URL, its own address, as in production.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..conftest import PASSWORD
from ..smtp import Mailbox, links_in, smtp_server, text_of
from .conftest import ACTION_TIMEOUT_MS, Device, browser_tests, serving

pytestmark = browser_tests

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect
# Its assertions wait as long as the other waits here (5 s by default).
expect.set_options(timeout=ACTION_TIMEOUT_MS)

NEW_PASSWORD = "purple elephant quietly juggles"
PASSWORD_CHANGED = "Your password was changed, so this device was signed out. Sign in with the new password."
RESET_DONE = "Your password has been reset and every device has been signed out. Sign in with your new password."


@pytest.fixture(scope="module")
def mailbox_and_server(tmp_path_factory, migrated_template):
    with (
        smtp_server() as (mailbox, port),
        serving(
            tmp_path_factory.mktemp("reset-db"),
            migrated_template,
            lambda url: {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(port), "PUBLIC_URL": url},
        ) as server,
    ):
        yield mailbox, server
        # Whatever is still being sent reaches the SMTP server before it stops.
        server.app.extensions["outbox"].wait(timeout=15)


@pytest.fixture(scope="module")
def live_server(mailbox_and_server):
    """This module's server (the `devices` fixture opens its browsers on it)."""
    return mailbox_and_server[1]


@pytest.fixture
def mailbox(mailbox_and_server) -> Mailbox:
    return mailbox_and_server[0]


def email_to(mailbox: Mailbox, address: str, subject: str):
    """The first email to `address` with `subject`, once it has arrived (others, such as
    new-sign-in notices, may come before it)."""
    count = 1
    while True:
        for message in mailbox.wait_for(count):
            if message["To"] == address and message["Subject"] == subject:
                return message
        count += 1


def test_forgotten_password_is_reset_through_the_emailed_link(devices, email, mailbox, live_server, screenshots):
    laptop = devices()
    laptop.register(email)  # stays signed in: the reset signs it out

    device = devices()
    page = device.page
    page.goto("/auth/login")
    page.get_by_role("link", name="Forgot password?").click()
    page.wait_for_url("**/auth/forgot")
    expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
    page.get_by_label("Email").press_sequentially(email)
    page.screenshot(path=screenshots / "forgot.png", full_page=True)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    expect(page.locator("[data-reset-requested]")).to_contain_text(email)

    message = email_to(mailbox, email, "Reset your password")
    [link] = links_in(message)
    assert link.startswith(live_server("/auth/reset/")), text_of(message)

    page.goto(link)
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()
    page.screenshot(path=screenshots / "reset.png", full_page=True)
    page.get_by_label("New password", exact=True).press_sequentially(NEW_PASSWORD)
    page.get_by_label("Confirm new password").press_sequentially(NEW_PASSWORD)
    page.get_by_role("button", name="Set the new password").click()
    page.wait_for_url(live_server("/auth/login"))
    expect(page.get_by_role("status").filter(has_text=RESET_DONE)).to_be_visible()
    assert device.signed_in_email() is None
    done = email_to(mailbox, email, "Your password was reset")
    assert links_in(done) == [live_server("/auth/forgot")]

    # The old password no longer signs in...
    device.sign_in(email, PASSWORD)
    expect(page.get_by_role("alert").filter(has_text="Incorrect email or password.")).to_be_visible()
    assert device.signed_in_email() is None
    page.get_by_label("Email").fill("")
    page.get_by_label("Password").fill("")
    # ...the new one does.
    device.sign_in(email, NEW_PASSWORD)
    page.wait_for_url(live_server("/account"))
    expect(page.get_by_test_id("account-email")).to_have_text(email)
    assert device.signed_in_email() == email

    # The link worked once.
    link_page = device.new_page()
    response = link_page.goto(link)
    assert response.status == 404
    expect(link_page.get_by_role("heading", name="This link no longer works")).to_be_visible()

    # The laptop was signed out: once its access cookie is gone (as when it expires),
    # its refresh token is refused, it is told why and asked to sign in.
    laptop.context.clear_cookies(name="access_token")
    laptop.page.goto("/account")
    laptop.page.wait_for_url(live_server("/auth/login?next=/account"))
    expect(laptop.page.locator(".flash").filter(has_text=PASSWORD_CHANGED)).to_be_visible()
    assert laptop.signed_in_email() is None


# --- over HTTPS, with production settings ---------------------------------------------------
#
# Over HTTPS, Flask-WTF's CSRF check also wants a same-origin Referer on every form: a page
# that sends none (`Referrer-Policy: no-referrer`, as the link's page once did) has each of
# its forms refused, which plain HTTP never shows. So both links are followed here the way
# production serves them: `APP_ENV=production` (`__Host-` cookies, Secure, HSTS), HTTPS
# with a certificate for 127.0.0.1 from a test CA, links built from PUBLIC_URL.

SIGNED_OUT_ELSEWHERE = "This device was signed out from another of your devices."


@pytest.fixture(scope="module")
def production_mailbox_and_server(tmp_path_factory, migrated_template):
    with (
        smtp_server() as (mailbox, port),
        serving(
            tmp_path_factory.mktemp("https-reset-db"),
            migrated_template,
            lambda url: {
                "APP_ENV": "production",
                "MAIL_SERVER": "127.0.0.1",
                "MAIL_PORT": str(port),
                "PUBLIC_URL": url,
            },
            tls=True,
        ) as server,
    ):
        assert server.url.startswith("https://127.0.0.1:")
        assert server.app.config["APP_ENV"] == "production"
        assert server.app.config["COOKIE_SECURE"]
        yield mailbox, server
        # Whatever is still being sent reaches the SMTP server before it stops.
        server.app.extensions["outbox"].wait(timeout=15)


@pytest.fixture
def production_server(production_mailbox_and_server):
    return production_mailbox_and_server[1]


@pytest.fixture
def production_mailbox(production_mailbox_and_server) -> Mailbox:
    return production_mailbox_and_server[0]


@pytest.fixture
def https_devices(browser, production_server) -> Iterator:
    """`https_devices()` opens a new device on the HTTPS server, accepting its test
    certificate; all are closed after the test, which fails if any of them asked for
    anything but the server's own https:// addresses."""
    opened: list[Device] = []
    elsewhere: list[str] = []

    def note_destination(request) -> None:
        if not request.url.startswith(production_server("/")):
            elsewhere.append(request.url)

    def open_device() -> Device:
        device = Device(browser, production_server, ignore_https_errors=True)
        device.context.on("request", note_destination)
        opened.append(device)
        return device

    yield open_device
    for device in opened:
        device.close()
    assert elsewhere == [], "requests that did not go to the HTTPS server"


def submit(page, button: str) -> None:
    """Click the form's `button`: the server must accept the form (a redirect). A form it
    refuses, as the CSRF check does without a same-origin Referer, fails here saying why."""
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name=button).click()
    response = posted.value
    if response.status not in (302, 303):
        page.wait_for_load_state()
        pytest.fail(f"POST {response.url} answered {response.status}: {page.locator('main').inner_text()}")


def set_new_password(page, password: str) -> None:
    """On the reset link's page: choose `password`, as a person would."""
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.get_by_label("New password", exact=True).press_sequentially(password)
    page.get_by_label("Confirm new password").press_sequentially(password)
    submit(page, "Set the new password")


def test_over_https_in_production_a_forgotten_password_is_reset(
    https_devices, email, production_mailbox, production_server
):
    server = production_server
    laptop = https_devices()
    laptop.register(email)
    # Production's cookies: __Host- names, Secure, on https:// only.
    assert laptop.cookies()["__Host-access_token"]["secure"]
    assert laptop.cookies()["__Host-session"]["secure"]

    device = https_devices()
    page = device.page
    page.goto("/auth/login")
    page.get_by_role("link", name="Forgot password?").click()
    expect(page).to_have_url(server("/auth/forgot"))
    page.get_by_label("Email").press_sequentially(email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    message = email_to(production_mailbox, email, "Reset your password")
    [link] = links_in(message)
    assert link.startswith(server("/auth/reset/")), text_of(message)

    page.goto(link)
    # The token is not in the address bar (nor in a Referer): the browser's session has it.
    expect(page).to_have_url(server("/auth/reset/set-password"))
    expect(page.get_by_text(email)).to_be_visible()
    set_new_password(page, NEW_PASSWORD)
    expect(page).to_have_url(server("/auth/login"))
    expect(page.get_by_role("status").filter(has_text=RESET_DONE)).to_be_visible()

    device.sign_in(email, NEW_PASSWORD)
    expect(page).to_have_url(server("/account"))
    expect(page.get_by_test_id("account-email")).to_have_text(email)


def test_over_https_in_production_not_you_signs_every_device_out(
    https_devices, email, production_mailbox, production_server
):
    server = production_server
    laptop = https_devices()
    laptop.register(email)

    # Someone who knows the password signs in on a device the account has not used.
    intruder = https_devices()
    intruder.sign_in(email)
    expect(intruder.page).to_have_url(server("/account"))
    message = email_to(production_mailbox, email, "New sign-in to your account")
    [link] = links_in(message)
    assert link.startswith(server("/auth/secure/")), text_of(message)

    # The owner opens the "Not you?" link, say on their phone.
    phone = https_devices()
    page = phone.page
    page.goto(link)
    expect(page).to_have_url(server("/auth/secure/confirm"))
    expect(page.get_by_role("heading", name="Secure your account")).to_be_visible()
    submit(page, "Sign out every device")
    expect(page).to_have_url(server("/auth/reset/set-password"))
    expect(
        page.locator(".flash").filter(
            has_text="2 devices were signed out and your old password no longer works. Choose a new one now."
        )
    ).to_be_visible()
    set_new_password(page, NEW_PASSWORD)
    expect(page).to_have_url(server("/auth/login"))
    expect(page.get_by_role("status").filter(has_text=RESET_DONE)).to_be_visible()

    # The old password no longer signs in; the new one does.
    phone.sign_in(email, PASSWORD)
    expect(page.get_by_role("alert").filter(has_text="Incorrect email or password.")).to_be_visible()
    page.get_by_label("Email").fill("")
    page.get_by_label("Password").fill("")
    phone.sign_in(email, NEW_PASSWORD)
    expect(page).to_have_url(server("/account"))
    expect(page.get_by_test_id("account-email")).to_have_text(email)

    # The intruder's device, and the laptop, are signed out at their next page.
    for signed_out in (intruder, laptop):
        signed_out.page.goto("/account")
        expect(signed_out.page).to_have_url(server("/auth/login?next=/account"))
        expect(signed_out.page.locator(".flash").filter(has_text=SIGNED_OUT_ELSEWHERE)).to_be_visible()
        assert signed_out.signed_in_email() is None
