"""Changing the password: the current one is needed; on success every other device is
signed out, this one goes on with fresh tokens, and only the new password works."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from webapp import accounts
from webapp.extensions import db
from webapp.models import SecurityEvent

from .conftest import PASSWORD, AuthActions, cookie_value, csrf_token_from

NEW_PASSWORD = "a brand new passphrase, long enough"


@pytest.fixture
def laptop_and_phone(app, auth):
    auth.register()
    phone = app.test_client()
    assert AuthActions(phone).login().status_code == 302
    return auth.client, phone


def change_password(client, current=PASSWORD, new=NEW_PASSWORD, confirm=None, csrf=True):
    data = {"current_password": current, "new_password": new, "confirm": new if confirm is None else confirm}
    if csrf:
        data["csrf_token"] = csrf_token_from(client.get("/account/password").data)
    return client.post("/account/password", data=data)


def sign_in_works(app, password) -> bool:
    client = app.test_client()
    AuthActions(client).login(password=password)
    return client.get("/api/me").status_code == 200


def password_events(app) -> list[SecurityEvent]:
    with app.app_context():
        return list(db.session.execute(select(SecurityEvent).where(SecurityEvent.kind == "password_changed")).scalars())


def test_the_form_has_the_three_fields(laptop_and_phone):
    laptop, _ = laptop_and_phone
    soup = BeautifulSoup(laptop.get("/account/password").data, "html.parser")
    form = soup.find("input", {"name": "current_password"}).find_parent("form")
    assert form["method"] == "post"
    assert {field["name"] for field in form.find_all("input")} == {
        "csrf_token",
        "current_password",
        "new_password",
        "confirm",
    }


def test_success_signs_out_every_other_device_and_keeps_this_one(app, laptop_and_phone):
    laptop, phone = laptop_and_phone
    old_refresh = laptop.get_cookie("refresh_token").value
    old_access = laptop.get_cookie("access_token").value

    response = change_password(laptop)
    assert response.status_code == 302
    assert response.headers["Location"] == "/account/sessions"

    # This browser got fresh tokens and stays signed in.
    assert laptop.get_cookie("refresh_token").value != old_refresh
    assert laptop.get_cookie("access_token").value != old_access
    page = laptop.get("/account/sessions")
    assert page.status_code == 200
    soup = BeautifulSoup(page.data, "html.parser")
    assert "Your password has been changed" in soup.get_text()
    assert len(soup.select("[data-session-id]")) == 1
    assert "Password changed" in soup.select_one("[data-event]").get_text()

    # The phone is refused at its next request, though its access token has not expired.
    refused = phone.get("/account")
    assert refused.status_code == 302
    assert refused.headers["Location"].startswith("/auth/login")

    assert not sign_in_works(app, PASSWORD)
    assert sign_in_works(app, NEW_PASSWORD)
    assert len(password_events(app)) == 1


def test_the_old_refresh_token_of_this_session_is_retired(app, clock, laptop_and_phone):
    laptop, _ = laptop_and_phone
    copied = laptop.get_cookie("refresh_token").value
    change_password(laptop)
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + app.config["REFRESH_REUSE_GRACE"] + 1)
    thief = app.test_client()
    thief.set_cookie("refresh_token", copied)
    assert thief.get("/api/me").status_code == 401


def test_a_wrong_current_password_changes_nothing(app, laptop_and_phone):
    laptop, phone = laptop_and_phone
    refresh_before = laptop.get_cookie("refresh_token").value

    response = change_password(laptop, current="not my password")
    assert response.status_code == 200
    soup = BeautifulSoup(response.data, "html.parser")
    assert "That is not your current password." in soup.get_text()

    assert laptop.get_cookie("refresh_token").value == refresh_before
    assert phone.get("/account").status_code == 200
    assert sign_in_works(app, PASSWORD)
    assert not sign_in_works(app, NEW_PASSWORD)
    assert password_events(app) == []


@pytest.mark.parametrize(
    ("new", "confirm", "message"),
    [
        ("short", "short", "Use 8 to 1000 characters."),
        ("x" * 1001, "x" * 1001, "Use 8 to 1000 characters."),
        (NEW_PASSWORD, NEW_PASSWORD + "!", "The passwords do not match."),
    ],
)
def test_a_bad_new_password_is_refused_with_a_message(app, laptop_and_phone, new, confirm, message):
    laptop, phone = laptop_and_phone
    response = change_password(laptop, new=new, confirm=confirm)
    assert response.status_code == 200
    assert message in BeautifulSoup(response.data, "html.parser").get_text()
    assert phone.get("/account").status_code == 200
    assert sign_in_works(app, PASSWORD)


def test_a_1000_character_password_works_in_full(app, laptop_and_phone):
    laptop, _ = laptop_and_phone
    long_password = "p" * 999 + "1"
    assert change_password(laptop, new=long_password).status_code == 302
    assert sign_in_works(app, long_password)
    assert not sign_in_works(app, "p" * 999 + "2")


def test_without_csrf_token_it_is_400_and_nothing_changes(app, laptop_and_phone):
    laptop, phone = laptop_and_phone
    assert change_password(laptop, csrf=False).status_code == 400
    assert phone.get("/account").status_code == 200
    assert sign_in_works(app, PASSWORD)
    assert password_events(app) == []


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/account/password")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=/account/password"


def test_a_change_that_fails_midway_changes_nothing(app, laptop_and_phone, monkeypatch):
    """The new password, the end of every session, the new one and the event are one
    transaction: the database failing at the last step (the event) undoes them all."""
    laptop, phone = laptop_and_phone

    def database_gone(*args, **kwargs):
        raise OperationalError("INSERT INTO security_events ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(accounts, "record_event", database_gone)
    response = change_password(laptop)
    monkeypatch.undo()

    assert response.status_code == 503
    assert sign_in_works(app, PASSWORD) and not sign_in_works(app, NEW_PASSWORD)
    assert phone.get("/api/me").status_code == 200
    assert laptop.get("/api/me").status_code == 200
    assert password_events(app) == []


def test_a_copy_of_this_browsers_cookies_dies_with_the_password_change(app, clock, laptop_and_phone):
    """Someone copied the laptop's cookies; the owner changes the password on the laptop
    moments after a rotation. The laptop goes on as a new session, and no token of the
    old one works any more: not the copied access token, not the copied refresh token
    (retired a moment ago, so inside the grace window), not the laptop's latest one."""
    laptop, _ = laptop_and_phone
    thief = app.test_client()
    copied_refresh = cookie_value(laptop, "refresh_token")
    thief.set_cookie("access_token", cookie_value(laptop, "access_token"))
    thief.set_cookie("refresh_token", copied_refresh)
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    old_session = laptop.get("/api/me").json["session_id"]  # rotates the laptop
    latest_refresh = cookie_value(laptop, "refresh_token")
    thief.set_cookie("access_token", cookie_value(laptop, "access_token"))

    assert change_password(laptop).status_code == 302

    new_session = laptop.get("/api/me").json["session_id"]
    assert new_session != old_session
    assert cookie_value(laptop, "refresh_token").startswith(new_session + ".0.")
    assert thief.get("/api/me").status_code == 401
    for refresh_token in (copied_refresh, latest_refresh):
        copy = app.test_client()
        copy.set_cookie("refresh_token", refresh_token)
        assert copy.get("/api/me").status_code == 401


def test_a_request_sent_just_before_the_change_does_not_undo_it(app, clock, laptop_and_phone):
    """The page's script sent a request with the old cookies just before the change; its
    answer arrives after the change's. It must not clear the new session's cookies."""
    laptop, _ = laptop_and_phone
    in_flight = app.test_client()
    in_flight.set_cookie("access_token", cookie_value(laptop, "access_token"))
    in_flight.set_cookie("refresh_token", cookie_value(laptop, "refresh_token"))
    assert change_password(laptop).status_code == 302

    late = in_flight.get("/api/me")
    assert late.status_code == 401
    assert "Set-Cookie" not in late.headers  # the browser keeps whatever it now has
    # Later, the old cookies are simply signed out (and cleared).
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    assert "Max-Age=0" in in_flight.get("/api/me").headers.get("Set-Cookie", "")
