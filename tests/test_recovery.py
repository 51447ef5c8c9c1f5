"""Account recovery over real email: the forgot-password form, the reset link, the
new-sign-in notice with its "Not you?" link, and what a failing SMTP server does not do.

Every email here travels over SMTP to an aiosmtpd server the test starts (tests/smtp.py).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from flask import template_rendered
from sqlalchemy import select

from webapp import mail
from webapp.extensions import db
from webapp.models import SecurityEvent, User

from .conftest import CHROME_UA, PASSWORD, AuthActions, csrf_token_from, make_app
from .smtp import free_port, html_of, links_in, smtp_server, text_of

PUBLIC_URL = "https://accounts.example.test"
EMAIL = "alice@example.com"
NEW_PASSWORD = "a brand new passphrase, long enough"
FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"


@pytest.fixture
def mailbox():
    with smtp_server() as (mailbox, port):
        mailbox.port = port
        yield mailbox


@pytest.fixture
def app_config(mailbox) -> dict:
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": mailbox.port, "PUBLIC_URL": PUBLIC_URL}


@pytest.fixture
def app(app):
    """The app on the test's SMTP server (which starts before it and stops after it):
    whatever the test left queued is sent before the server goes."""
    yield app
    app.extensions["outbox"].wait(15)


def sent(app, timeout: float = 15) -> None:
    """Wait until the app's outbox has sent (or given up on) everything queued."""
    assert app.extensions["outbox"].wait(timeout), "the outbox did not finish sending"


def ask_for_reset(client, email: str = EMAIL, **headers):
    token = csrf_token_from(client.get("/auth/forgot", headers=headers).data)
    return client.post("/auth/forgot", data={"email": email, "csrf_token": token}, headers=headers)


def path_of(link: str) -> str:
    assert link.startswith(PUBLIC_URL + "/"), link
    return urlsplit(link).path


def reset_link_from(mailbox, count: int = 1) -> str:
    message = mailbox.wait_for(count)[count - 1]
    assert message["Subject"] == "Reset your password"
    [link] = [link for link in links_in(message) if "/auth/reset/" in link]
    return link


def open_link(client, path: str):
    """Follow an emailed link as a browser does: the link's address keeps its token in
    this browser's session and redirects to the form's address, which has none."""
    return client.get(path, follow_redirects=True)


def set_new_password(client, path: str, password: str = NEW_PASSWORD, confirm: str | None = None):
    page = open_link(client, path)
    if page.status_code != 200:
        return page
    data = {**hidden_fields(page), "new_password": password, "confirm": password if confirm is None else confirm}
    return client.post(page.request.path, data=data)


def hidden_fields(page) -> dict[str, str]:
    """What the page's form sends besides what a person types: its CSRF token, the link."""
    form = BeautifulSoup(page.data, "html.parser").find("form", method="post")
    return {field["name"]: field.get("value", "") for field in form.find_all("input", type="hidden")}


def signs_in(app, password: str, email: str = EMAIL) -> bool:
    client = app.test_client()
    AuthActions(client).login(email=email, password=password)
    return client.get("/api/me").status_code == 200


def events(app, kind: str) -> list[SecurityEvent]:
    with app.app_context():
        return list(db.session.execute(select(SecurityEvent).where(SecurityEvent.kind == kind)).scalars())


def page_text(response) -> str:
    return " ".join(BeautifulSoup(response.data, "html.parser").get_text().split())


@pytest.fixture
def alice(app, auth):
    """Alice's account, signed in on this client (registration sends no email)."""
    assert auth.register().status_code == 302
    return auth.client


# --- the reset, through the forms ------------------------------------------------------------


def test_forgot_password_emails_a_link_that_sets_a_new_password_and_ends_every_session(app, alice, mailbox):
    phone = app.test_client()
    assert AuthActions(phone).login().status_code == 302
    script = app.test_client()
    api = script.post("/api/auth/token", json={"email": EMAIL, "password": PASSWORD, "client_name": "backup script"})
    assert api.status_code == 200
    sent(app)
    mailbox.messages.clear()  # the two new-sign-in notices

    visitor = app.test_client()
    answer = ask_for_reset(visitor, "  Alice@Example.com ")
    assert answer.status_code == 200
    assert "If an account exists for alice@example.com, a link to choose a new password is on its way" in page_text(
        answer
    )

    message = mailbox.wait_for(1)[0]
    assert message["To"] == EMAIL
    assert message["From"] == "no-reply@localhost"
    link = reset_link_from(mailbox)
    assert link in html_of(message)
    assert "It works once, for 1 hour" in text_of(message)

    form_page = open_link(visitor, path_of(link))
    assert form_page.status_code == 200
    assert "Choose a new password" in page_text(form_page)
    assert form_page.request.path == "/auth/reset/set-password"

    done = set_new_password(visitor, path_of(link))
    assert done.status_code == 302
    assert done.headers["Location"] == "/auth/login"
    landing = visitor.get("/auth/login")
    assert "Your password has been reset and every device has been signed out" in page_text(landing)

    assert signs_in(app, NEW_PASSWORD)
    assert not signs_in(app, PASSWORD)
    # Every session ended: both browsers and the API client, at their very next request;
    # a browser learns why.
    assert "Your password was changed" in page_text(alice.get("/account", follow_redirects=True))
    assert phone.get("/api/me").status_code == 401
    bearer = {"Authorization": f"Bearer {api.json['access_token']}"}
    assert script.get("/api/me", headers=bearer).status_code == 401
    assert script.post("/api/auth/refresh", json={"refresh_token": api.json["refresh_token"]}).status_code == 401

    [event] = events(app, "password_reset")
    assert event.detail == "3 devices signed out"

    # After the link: the reset's notice and the new-sign-in notice of `signs_in`, sent by
    # two threads, in either order.
    [notice] = [message for message in mailbox.wait_for(3) if message["Subject"] == "Your password was reset"]
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "Your password was reset"
    assert "3 devices were signed out" in text_of(notice)


def test_the_reset_form_applies_the_password_rules(app, alice, mailbox):
    ask_for_reset(app.test_client())
    path = path_of(reset_link_from(mailbox))
    visitor = app.test_client()

    too_short = set_new_password(visitor, path, "short")
    assert too_short.status_code == 200
    assert "Use 8 to 1000 characters." in page_text(too_short)
    mismatch = set_new_password(visitor, path, NEW_PASSWORD, confirm="something else entirely")
    assert "The passwords do not match." in page_text(mismatch)

    assert signs_in(app, PASSWORD)
    assert alice.get("/api/me").status_code == 200


def test_the_link_works_once(app, alice, mailbox):
    ask_for_reset(app.test_client())
    path = path_of(reset_link_from(mailbox))
    visitor = app.test_client()
    assert set_new_password(visitor, path).status_code == 302

    again = visitor.get(path)
    assert again.status_code == 404
    assert "This link no longer works" in page_text(again)
    reused = set_new_password(app.test_client(), path, "yet another password for the thief")
    assert reused.status_code == 404
    assert signs_in(app, NEW_PASSWORD)
    assert not signs_in(app, "yet another password for the thief")


def test_the_link_dies_when_the_password_changes(app, alice, mailbox):
    ask_for_reset(app.test_client())
    path = path_of(reset_link_from(mailbox))

    # Alice remembers her password and changes it on her account page.
    form = alice.get("/account/password")
    changed = alice.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token_from(form.data),
        },
    )
    assert changed.status_code == 302

    assert app.test_client().get(path).status_code == 404
    assert set_new_password(app.test_client(), path, "the thief's password choice").status_code == 404
    assert signs_in(app, NEW_PASSWORD)


def test_the_link_expires_after_password_reset_ttl(app, alice, mailbox, clock):
    ask_for_reset(app.test_client())
    path = path_of(reset_link_from(mailbox))

    clock.advance(app.config["PASSWORD_RESET_TTL"] - 1)
    assert open_link(app.test_client(), path).status_code == 200
    clock.advance(2)
    expired = set_new_password(app.test_client(), path)
    assert expired.status_code == 404
    assert "has expired" in page_text(expired)
    assert signs_in(app, PASSWORD)


@pytest.mark.parametrize(
    "path",
    [
        "/auth/reset/not-a-token",
        "/auth/reset/1.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/auth/reset/99999999999999999.zzzzzzzzzzzz.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/auth/reset/" + "1" * 5000,
        "/auth/secure/1.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_forged_links_are_refused_with_a_page_not_an_error(app, alice, path):
    response = app.test_client().get(path)
    assert response.status_code == 404
    assert "This link no longer works" in page_text(response)


def test_a_link_for_one_account_does_not_open_another(app, alice, mailbox):
    AuthActions(app.test_client()).register(email="bob@example.com")
    ask_for_reset(app.test_client())
    user_id, rest = urlsplit(reset_link_from(mailbox)).path.removeprefix("/auth/reset/").split(".", 1)
    with app.app_context():
        bob_id = db.session.execute(select(User.id).where(User.email == "bob@example.com")).scalar_one()
    assert bob_id != int(user_id)
    assert app.test_client().get(f"/auth/reset/{bob_id}.{rest}").status_code == 404


# --- what the form never tells -----------------------------------------------------------------


def test_an_unknown_address_gets_the_same_answer_and_no_email(app, alice, mailbox):
    known = ask_for_reset(app.test_client(), EMAIL)
    unknown = ask_for_reset(app.test_client(), "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert page_text(known).replace(EMAIL, "X") == page_text(unknown).replace("nobody@example.com", "X")

    sent(app)
    assert [message["To"] for message in mailbox.messages] == [EMAIL]


def test_an_unknown_address_costs_the_same_rendering_sent_nowhere(app, alice, mailbox):
    # The outbox shares the process's CPU with the next requests: an address with no
    # account still has its email rendered (a decoy), so their timing tells nothing.
    rendered = []

    def record(sender, template, context, **extra):
        rendered.append(template.name)

    with template_rendered.connected_to(record, app):
        assert ask_for_reset(app.test_client(), "nobody@example.com").status_code == 200
        sent(app)
    assert {"email/password_reset.txt", "email/password_reset.html"} <= set(rendered)
    assert mailbox.messages == []


def test_a_disabled_account_gets_no_email(app, alice, mailbox, runner):
    assert runner.invoke(args=["users", "disable", EMAIL]).exit_code == 0
    assert ask_for_reset(app.test_client()).status_code == 200
    sent(app)
    assert mailbox.messages == []


def test_links_come_from_public_url_never_from_the_host_header(app, alice, mailbox):
    ask_for_reset(app.test_client(), EMAIL, Host="evil.example")
    link = reset_link_from(mailbox)
    assert link.startswith(PUBLIC_URL + "/auth/reset/")
    assert "evil.example" not in text_of(mailbox.messages[0]) + html_of(mailbox.messages[0])


def test_the_token_leaves_the_address_bar_before_any_page_is_shown(app, alice, mailbox):
    ask_for_reset(app.test_client())
    link_path = path_of(reset_link_from(mailbox))
    visitor = app.test_client()
    first = visitor.get(link_path)
    # The link's address only redirects, sending no Referer on, to an address without it.
    assert first.status_code == 303
    assert first.headers["Location"] == "/auth/reset/set-password"
    assert first.headers["Referrer-Policy"] == "no-referrer"
    form_page = visitor.get(first.headers["Location"])
    assert form_page.headers["Cache-Control"] == "no-store"
    # The form carries the token from here on; the browser's session cookie, which a
    # copied cookie jar would hold, no longer does.
    session = app.session_interface.get_signing_serializer(app).loads(visitor.get_cookie("session").value)
    assert "reset_link" not in session
    assert hidden_fields(form_page)["link"] == link_path.rsplit("/", 1)[1]
    # The form's own page sends the same-origin Referer that the CSRF check needs over HTTPS.
    assert form_page.headers["Referrer-Policy"] == "same-origin"


def test_the_form_address_without_a_link_opened_first_says_the_link_does_not_work(app):
    page = app.test_client().get("/auth/reset/set-password")
    assert page.status_code == 404
    assert "This link no longer works" in page_text(page)


def test_the_token_never_reaches_a_log_or_the_page_after_use(app, alice, mailbox, caplog):
    caplog.set_level(logging.DEBUG)
    visitor = app.test_client()
    ask_for_reset(visitor)
    link = reset_link_from(mailbox)
    token = link.rsplit("/", 1)[1]
    done = set_new_password(visitor, path_of(link))
    after = visitor.get(done.headers["Location"])
    sent(app)

    assert token not in after.get_data(as_text=True)
    assert any("password_reset email for user" in record.getMessage() for record in caplog.records)
    # (aiosmtpd's own debug log, "mail.log", is the test's SMTP server, not the app.)
    ours = [record for record in caplog.records if record.name != "mail.log"]
    assert not [record for record in ours if token in record.getMessage()]


# --- limits ------------------------------------------------------------------------------------


def test_one_address_gets_at_most_three_emails_an_hour_and_the_answer_does_not_change(app, alice, mailbox):
    answers = [page_text(ask_for_reset(app.test_client())) for _ in range(5)]
    assert len(set(answers)) == 1
    sent(app)
    assert len(mailbox.to(EMAIL)) == 3


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_IP": "3 per 15 minutes"}])
def test_one_client_gets_a_429_after_too_many_requests(app):
    client = app.test_client()
    for number in range(3):
        assert ask_for_reset(client, f"someone{number}@example.com").status_code == 200
    refused = ask_for_reset(client, "someone3@example.com")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many password reset requests from this address" in page_text(refused)


# --- the new-device notice and its "Not you?" link ----------------------------------------------


def test_a_sign_in_from_a_new_device_is_emailed_and_a_known_device_is_not(app, alice, mailbox):
    # Alice registered in this browser: signing out and in again there is no news.
    AuthActions(alice).logout()
    assert AuthActions(alice).login().status_code == 302
    sent(app)
    assert mailbox.messages == []

    stranger = app.test_client()
    stranger.environ_base.update(HTTP_USER_AGENT=FIREFOX_UA, REMOTE_ADDR="203.0.113.9")
    assert AuthActions(stranger).login().status_code == 302
    [notice] = mailbox.wait_for(1)
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "New sign-in to your account"
    body = text_of(notice)
    assert "Device: Firefox 132 on Linux" in body
    assert "IP address: 203.0.113.9" in body
    assert "When: 2026-01-15 12:00:00 UTC" in body
    [secure_link] = [link for link in links_in(notice) if "/auth/secure/" in link]
    assert secure_link.startswith(PUBLIC_URL)
    assert secure_link in html_of(notice)

    # The stranger's browser is a known device from now on.
    AuthActions(stranger).logout()
    AuthActions(stranger).login()
    sent(app)
    assert len(mailbox.messages) == 1


def test_an_api_sign_in_is_a_new_device_each_time(app, alice, mailbox):
    body = {"email": EMAIL, "password": PASSWORD, "client_name": "backup script"}
    assert app.test_client().post("/api/auth/token", json=body).status_code == 200
    assert app.test_client().post("/api/auth/token", json=body).status_code == 200
    notices = mailbox.wait_for(2)
    assert [notice["Subject"] for notice in notices] == ["New sign-in to your account"] * 2
    assert "Device: API client: backup script" in text_of(notices[0])


def test_a_client_name_cannot_dress_up_a_notice(app, alice, mailbox):
    # Escape sequences, a right-to-left override, line breaks: none reaches the email.
    name = "URGENT\x1b[31m call\u202e 0100-555 \r\nBcc: x@evil.example"
    body = {"email": EMAIL, "password": PASSWORD, "client_name": name}
    assert app.test_client().post("/api/auth/token", json=body).status_code == 200
    [notice] = mailbox.wait_for(1)
    assert notice["Subject"] == "New sign-in to your account"
    assert "Device: API client: URGENT [31m call 0100-555 Bcc: x@evil.example" in text_of(notice)
    assert mailbox.envelopes[0][1] == [EMAIL]


def test_not_you_signs_every_device_out_in_one_click_then_leads_to_a_new_password(app, alice, mailbox):
    thief = app.test_client()
    thief.environ_base.update(HTTP_USER_AGENT=CHROME_UA)
    AuthActions(thief).login()
    script = app.test_client().post("/api/auth/token", json={"email": EMAIL, "password": PASSWORD})
    notices = mailbox.wait_for(2)
    [secure_link] = [link for link in links_in(notices[0]) if "/auth/secure/" in link]

    # Alice opens the link on her phone, which is not signed in.
    phone = app.test_client()
    page = open_link(phone, path_of(secure_link))
    assert page.status_code == 200
    assert page.request.path == "/auth/secure/confirm"
    soup = BeautifulSoup(page.data, "html.parser")
    form = soup.find("form", method="post")
    assert form.find("button").get_text(strip=True) == "Sign out every device"
    assert alice.get("/api/me").status_code == 200  # a GET changes nothing

    clicked = phone.post(page.request.path, data=hidden_fields(page))
    assert clicked.status_code == 303
    reset_path = clicked.headers["Location"]
    assert reset_path == "/auth/reset/set-password"

    # The thief knows the password: it must stop working at once, not when Alice has
    # chosen a new one.
    assert not signs_in(app, PASSWORD)
    assert thief.get("/api/me").status_code == 401
    assert alice.get("/api/me").status_code == 401
    bearer = {"Authorization": f"Bearer {script.json['access_token']}"}
    assert app.test_client().get("/api/me", headers=bearer).status_code == 401
    [event] = events(app, "signed_out_everywhere")
    assert event.detail == "3 devices signed out"

    # The email's link worked once.
    assert app.test_client().get(path_of(secure_link)).status_code == 404
    next_page = phone.get(reset_path)
    assert "3 devices were signed out and your old password no longer works. Choose a new one now." in page_text(
        next_page
    )
    chosen = {**hidden_fields(next_page), "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert phone.post(reset_path, data=chosen).status_code == 302
    assert signs_in(app, NEW_PASSWORD)


def test_a_password_change_is_emailed(app, alice, mailbox):
    form = alice.get("/account/password")
    alice.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token_from(form.data),
        },
    )
    [notice] = mailbox.wait_for(1)
    assert notice["Subject"] == "Your password was changed"
    assert f"{PUBLIC_URL}/auth/forgot" in links_in(notice)


# --- operators ---------------------------------------------------------------------------------


def test_reset_link_command_prints_a_working_link(app, alice, runner, mailbox):
    result = runner.invoke(args=["users", "reset-link", "ALICE@example.com"])
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith(PUBLIC_URL + "/auth/reset/")
    assert set_new_password(app.test_client(), path_of(link)).status_code == 302
    assert signs_in(app, NEW_PASSWORD)


def test_reset_link_command_fails_for_an_unknown_email(app, runner):
    result = runner.invoke(args=["users", "reset-link", "nobody@example.com"])
    assert result.exit_code == 1
    assert "No account has the email 'nobody@example.com'" in result.output


# --- when the SMTP server is slow or gone ------------------------------------------------------


def test_a_slow_smtp_server_does_not_hold_the_page(app, alice, mailbox):
    mailbox.hold()
    answer = ask_for_reset(app.test_client())
    # The page was answered while the server had not even accepted the message.
    assert answer.status_code == 200
    assert mailbox.messages == []
    mailbox.release()
    reset_link_from(mailbox)


def test_with_the_smtp_server_down_pages_answer_and_nothing_is_lost(database_url, clock, caplog):
    caplog.set_level(logging.INFO, logger="webapp.mail")
    app = make_app(database_url, clock, MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), PUBLIC_URL=PUBLIC_URL)
    browser = app.test_client()
    auth = AuthActions(browser)
    auth.register()

    assert ask_for_reset(app.test_client()).status_code == 200
    stranger = app.test_client()
    assert AuthActions(stranger).login().status_code == 302  # its notice fails too
    form = browser.get("/account/password")
    changed = browser.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
            "csrf_token": csrf_token_from(form.data),
        },
    )
    assert changed.status_code == 302
    sent(app)
    failures = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]

    # What the emails were about happened and stays: this browser is signed in, the
    # stranger's session ended with the change, the new password works.
    assert browser.get("/api/me").status_code == 200
    assert stranger.get("/api/me").status_code == 401
    assert signs_in(app, NEW_PASSWORD)
    # Each failed send is logged, naming the user by id, never by address.
    assert sorted(failure.split(" email")[0] for failure in failures) == [
        "new_sign_in",
        "password_changed",
        "password_reset",
    ]
    assert all("for user 1 not sent: ConnectionRefusedError" in failure for failure in failures)
    with app.app_context():
        db.engine.dispose()


def test_while_the_smtp_server_hangs_the_queue_is_bounded_and_drops_are_logged(app, mailbox, monkeypatch, caplog):
    monkeypatch.setattr(mail, "MAX_QUEUED", 2)
    for name in ("ann", "ben", "cat"):
        AuthActions(app.test_client()).register(email=f"{name}@example.com")
    mailbox.hold()
    for name in ("ann", "ben", "cat"):
        assert ask_for_reset(app.test_client(), f"{name}@example.com").status_code == 200
    mailbox.release()
    sent(app)
    assert sorted(message["To"] for message in mailbox.messages) == ["ann@example.com", "ben@example.com"]
    [dropped] = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert dropped == "password_reset email for user 3 not sent: 2 emails are waiting already"
