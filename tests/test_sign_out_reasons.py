"""A browser whose session ended is told why, in plain words, one reason each, on the
page it lands on; a visitor who never had a session is told nothing. And the events of
the security activity name the device they concern, with counts that match."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select

from webapp import accounts
from webapp.database import unit_of_work
from webapp.devices import Device
from webapp.extensions import db
from webapp.models import SecurityEvent

from .conftest import PASSWORD, AuthActions, cookie_value, csrf_token_from

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"


def flashes(response) -> list[str]:
    soup = BeautifulSoup(response.data, "html.parser")
    return [element.get_text(" ", strip=True) for element in soup.select(".flash")]


def sign_in(app, user_agent: str = FIREFOX):
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = user_agent
    assert AuthActions(client).login().status_code == 302
    return client


def session_id_of(client) -> str:
    return client.get("/api/me").json["session_id"]


def post(client, path: str, data: dict | None = None):
    token = csrf_token_from(client.get("/account/sessions").data)
    return client.post(path, data={"csrf_token": token, **(data or {})})


def next_page_after_expiry(app, clock, client, path: str = "/account"):
    """The browser's next visit once its access token expired: the refresh decides."""
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    return client.get(path, follow_redirects=True)


@pytest.fixture
def laptop(app, auth):
    auth.register()
    auth.client.get("/account")  # shows (and so clears) the welcome message
    return auth.client


def test_a_script_request_that_finds_the_device_signed_out_is_told_why_and_so_is_the_next_page(app, clock, laptop):
    phone = sign_in(app)
    post(laptop, f"/account/sessions/{session_id_of(phone)}/revoke")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    answer = phone.get("/api/session")  # a page's script, not a navigation
    assert answer.status_code == 401
    assert answer.json == {
        "error": "session_expired",
        "message": "This device was signed out from another of your devices.",
        "reason": "revoked_by_user",
    }
    # The sign-in page the script's notice links to (naming the reason) says it once more.
    told = flashes(phone.get("/auth/login?next=/account&why=revoked_by_user"))
    assert told == ["This device was signed out from another of your devices."]


def test_a_late_script_answer_brings_no_old_message_back_after_signing_in_again(app, clock, laptop):
    """The open page fires two scripts; the slow one's 401 lands after the person went to
    sign in. Whatever that answer sets must not greet the new session with the old news."""
    phone = sign_in(app)
    phone.get("/account")
    post(laptop, f"/account/sessions/{session_id_of(phone)}/revoke")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    slow = app.test_client()  # the same browser's cookies, in a request still on its way
    for name in ("session", "access_token", "refresh_token"):
        slow.set_cookie(name, cookie_value(phone, name))

    assert phone.get("/api/session").status_code == 401
    sign_in_page = phone.get("/auth/login?next=/account&why=revoked_by_user")
    assert flashes(sign_in_page) == ["This device was signed out from another of your devices."]
    assert slow.get("/api/security-events").status_code == 401  # lands now
    if slow.get_cookie("session") is not None:  # whatever it set, the browser keeps
        phone.set_cookie("session", cookie_value(slow, "session"))
    form = {"email": "alice@example.com", "password": PASSWORD, "csrf_token": csrf_token_from(sign_in_page.data)}
    assert phone.post("/auth/login?next=/account", data=form).status_code == 302
    assert flashes(phone.get("/account")) == []


def test_the_sign_in_page_names_only_reasons_of_its_own(app):
    visitor = app.test_client()
    assert flashes(visitor.get("/auth/login?why=<script>alert(1)</script>")) == []
    assert flashes(visitor.get("/auth/login?why=")) == []
    assert flashes(visitor.get("/auth/login?why=expired")) == ["Your session has expired. Please sign in again."]


def test_signed_out_from_another_device(app, clock, laptop):
    phone = sign_in(app)
    post(laptop, f"/account/sessions/{session_id_of(phone)}/revoke")
    assert flashes(next_page_after_expiry(app, clock, phone)) == [
        "This device was signed out from another of your devices."
    ]


def test_all_other_devices_signed_out(app, clock, laptop):
    phone = sign_in(app)
    post(laptop, "/account/sessions/revoke-others")
    assert flashes(next_page_after_expiry(app, clock, phone)) == [
        "This device was signed out from another of your devices."
    ]


def test_password_changed_elsewhere(app, clock, laptop):
    phone = sign_in(app)
    token = csrf_token_from(laptop.get("/account/password").data)
    new = "an entirely new passphrase"
    laptop.post(
        "/account/password",
        data={"current_password": PASSWORD, "new_password": new, "confirm": new, "csrf_token": token},
    )
    assert flashes(next_page_after_expiry(app, clock, phone)) == [
        "Your password was changed, so this device was signed out. Sign in with the new password."
    ]


def test_a_copy_of_the_sign_in_was_used(app, clock, laptop):
    stolen = cookie_value(laptop, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    laptop.get("/account")
    laptop.get("/account")
    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    thief.get("/")
    landing = next_page_after_expiry(app, clock, laptop)
    [message] = flashes(landing)
    assert message.startswith("We signed you out to protect your account")
    # Shown as an alert, not as a routine notice.
    [alert] = BeautifulSoup(landing.data, "html.parser").select(".flash-danger")
    assert alert.get_text(" ", strip=True) == message


def test_expired(app, clock, laptop):
    clock.advance(app.config["REFRESH_TOKEN_TTL"] + 1)
    assert flashes(laptop.get("/account", follow_redirects=True)) == ["Your session has expired. Please sign in again."]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("disable", "An administrator has disabled this account."),
        ("sign-out", "An administrator signed you out."),
    ],
)
def test_an_administrator_ended_it(app, clock, runner, laptop, command, message):
    assert runner.invoke(args=["users", command, "alice@example.com"]).exit_code == 0
    assert flashes(next_page_after_expiry(app, clock, laptop)) == [message]


def test_the_home_page_says_it_too(app, clock, laptop):
    phone = sign_in(app)
    post(laptop, f"/account/sessions/{session_id_of(phone)}/revoke")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    home = phone.get("/")
    assert home.status_code == 200
    assert flashes(home) == ["This device was signed out from another of your devices."]


def test_a_visitor_who_never_had_a_session_is_told_nothing(app, client):
    client.set_cookie("refresh_token", "A" * 22 + ".0." + "B" * 43)  # no such token was ever issued
    assert flashes(client.get("/", follow_redirects=True)) == []
    assert flashes(client.get("/account", follow_redirects=True)) == []


def test_signing_out_twice_says_already_signed_out(app, laptop):
    second_tab_token = csrf_token_from(laptop.get("/account").data)
    first_tab = laptop.post("/auth/logout", data={"csrf_token": second_tab_token}, follow_redirects=True)
    assert flashes(first_tab) == ["You have signed out."]
    again = laptop.post("/auth/logout", data={"csrf_token": second_tab_token}, follow_redirects=True)
    assert again.status_code == 200
    assert flashes(again) == ["You are already signed out."]


def test_events_name_the_device_they_concern_and_count_what_happened(app, clock, laptop):
    phone = sign_in(app)
    post(laptop, f"/account/sessions/{session_id_of(phone)}/revoke")
    post(laptop, "/account/sessions/revoke-others")  # nothing left to sign out: no event
    with app.app_context():
        events = db.session.execute(select(SecurityEvent).order_by(SecurityEvent.id)).scalars().all()
        kinds = [event.kind for event in events]
        assert kinds == ["signed_in", "signed_in", "session_revoked"]
        assert events[-1].user_agent == FIREFOX
    tablet = sign_in(app)
    other = sign_in(app)
    assert post(laptop, "/account/sessions/revoke-others").status_code == 302
    with app.app_context():
        last = db.session.execute(select(SecurityEvent).order_by(SecurityEvent.id.desc())).scalars().first()
        assert (last.kind, last.detail) == ("other_sessions_revoked", "2 other devices signed out")
    assert tablet.get("/api/me").status_code == other.get("/api/me").status_code == 401


def test_a_password_change_counts_the_other_devices(app, laptop):
    sign_in(app)
    with app.app_context(), unit_of_work(db.session):
        user = accounts.find_user(db.session, "alice@example.com")
        me = db.session.execute(select(SecurityEvent.session_public_id)).scalars().first()
        accounts.change_password(
            db.session,
            user_id=user.id,
            session_id=me,
            current_password=PASSWORD,
            new_password="another long passphrase",
            rounds=4,
            policy=app.extensions["session_policy"],
            now=app.config["CLOCK"](),
            device=Device(),
        )
    with app.app_context():
        last = db.session.execute(select(SecurityEvent).order_by(SecurityEvent.id.desc())).scalars().first()
        assert (last.kind, last.detail) == ("password_changed", "1 other device signed out")


def reuse_alert_for(app, clock, laptop, phone) -> None:
    """A copy of the phone's refresh token is used after the phone moved on."""
    stolen = cookie_value(phone, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    phone.get("/account")
    phone.get("/account")
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    thief.get("/")


def open_alert_ids(app) -> list[int]:
    with app.app_context():
        return list(
            db.session.execute(
                select(SecurityEvent.id).where(
                    SecurityEvent.kind == "refresh_token_reused", SecurityEvent.acknowledged_at.is_(None)
                )
            ).scalars()
        )


def test_this_was_me_dismisses_the_alert_and_keeps_the_event(app, clock, laptop):
    phone = sign_in(app)
    reuse_alert_for(app, clock, laptop, phone)
    [alert_id] = open_alert_ids(app)
    assert post(laptop, f"/account/alerts/{alert_id}/dismiss").status_code == 302
    assert open_alert_ids(app) == []
    with app.app_context():
        kinds = db.session.execute(select(SecurityEvent.kind)).scalars().all()
        assert "refresh_token_reused" in kinds
    # Nobody else's alert, and no alert twice.
    assert post(laptop, f"/account/alerts/{alert_id}/dismiss").status_code == 404


def test_secure_my_account_signs_out_every_other_device_and_leads_to_a_new_password(app, clock, laptop):
    phone = sign_in(app)
    tablet = sign_in(app)
    reuse_alert_for(app, clock, laptop, phone)
    response = post(laptop, "/account/secure")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/password")
    assert flashes(laptop.get(response.headers["Location"])) == [
        "Every other device has been signed out. Now choose a new password, so that nobody can sign in "
        "with the old one."
    ]
    assert tablet.get("/api/me").status_code == 401
    assert laptop.get("/api/me").status_code == 200
    assert open_alert_ids(app) == []


def test_an_alert_belongs_to_its_owner(app, clock, laptop):
    phone = sign_in(app)
    reuse_alert_for(app, clock, laptop, phone)
    [alert_id] = open_alert_ids(app)
    stranger = app.test_client()
    AuthActions(stranger).register(email="mallory@example.com")
    token = csrf_token_from(stranger.get("/account/sessions").data)
    assert stranger.post(f"/account/alerts/{alert_id}/dismiss", data={"csrf_token": token}).status_code == 404
    assert open_alert_ids(app) == [alert_id]


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_ACCOUNT": "2 per 15 minutes"}])
def test_too_many_attempts_says_when_to_try_again(app, laptop):
    stranger = app.test_client()
    for _ in range(2):
        AuthActions(stranger).login(password="wrong password")
    refused = AuthActions(stranger).login(password="wrong password")
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    text = BeautifulSoup(refused.data, "html.parser").get_text(" ", strip=True)
    minutes = -(-retry_after // 60)
    assert f"You can try again in {minutes} minute" in text


@pytest.mark.parametrize("event_id", ["9223372036854775808", "2147483648", "-1", "0", "abc"])
def test_a_dismissal_of_no_such_alert_is_404(laptop, event_id):
    assert post(laptop, f"/account/alerts/{event_id}/dismiss").status_code == 404


def test_other_devices_are_told_at_once_after_a_password_change(app, laptop):
    phone = sign_in(app)
    token = csrf_token_from(laptop.get("/account/password").data)
    new = "an entirely new passphrase"
    laptop.post(
        "/account/password",
        data={"current_password": PASSWORD, "new_password": new, "confirm": new, "csrf_token": token},
    )
    phone.delete_cookie("access_token")  # its next request needs the refresh token, right away
    assert flashes(phone.get("/", follow_redirects=True)) == [
        "Your password was changed, so this device was signed out. Sign in with the new password."
    ]
    assert laptop.get("/api/me").status_code == 200


def test_a_sign_out_without_a_csrf_token_ends_nothing(app, laptop):
    """Another site can post to /auth/logout. With the auth cookies (SameSite=Lax keeps
    them off a cross-site POST, but a same-site one would carry them) it needs the CSRF
    token; without them it is let through, and must then end, clear and record nothing."""
    with_cookies = laptop.post("/auth/logout")
    assert with_cookies.status_code == 400
    assert laptop.get("/api/me").status_code == 200

    cross_site = app.test_client()  # what a cross-site POST looks like: no auth cookie
    answer = cross_site.post("/auth/logout")
    assert answer.status_code == 302
    assert "Clear-Site-Data" not in answer.headers
    assert not any(
        header.startswith(("access_token=", "refresh_token=")) for header in answer.headers.getlist("Set-Cookie")
    )
    with app.app_context():
        kinds = db.session.execute(select(SecurityEvent.kind)).scalars().all()
    assert "signed_out" not in kinds
    assert laptop.get("/api/me").status_code == 200
