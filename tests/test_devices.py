"""The devices page: every signed-in session, signing devices out, security activity and
the per-user session limit. Two browsers are two test clients with their own cookies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from webapp import accounts, sessions
from webapp.account.events import EVENT_LABELS, event_label
from webapp.devices import Device, device_kind, device_words, exact_time, relative_time, time_until
from webapp.extensions import db
from webapp.models import SecurityEvent, Session
from webapp.security_events import EventKind

from .conftest import AuthActions, csrf_token_from

FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15"
)
CHROME_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 "
    "Mobile/15E148 Safari/604.1"
)
CURL = "curl/8.5.0"


# --- device words and relative times: pure functions --------------------------------


@pytest.mark.parametrize(
    ("user_agent", "words"),
    [
        (FIREFOX_WINDOWS, "Firefox 132 on Windows"),
        (CHROME_ANDROID, "Chrome 131 on Android"),
        (SAFARI_IPHONE, "Safari on iPhone"),
        (SAFARI_MAC, "Safari on macOS"),
        (CHROME_IPAD, "Chrome 131 on iPad"),
        (CURL, "Unknown device"),
        ("python-requests/2.32.3", "Unknown device"),
        ("", "Unknown device"),
        ("   ", "Unknown device"),
        (None, "Unknown device"),
        ("\x00<script>garbage", "Unknown device"),
    ],
)
def test_device_words_name_browser_and_platform(user_agent, words):
    assert device_words(user_agent) == words


def test_device_words_name_api_clients_by_their_own_name():
    assert device_words("python-requests/2.32.3", client_name="backup tool") == "API client: backup tool"


NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("ago", "words"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=-5), "just now"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(minutes=3, seconds=30), "3 minutes ago"),
        (timedelta(minutes=59), "59 minutes ago"),
        (timedelta(hours=1), "1 hour ago"),
        (timedelta(hours=23), "23 hours ago"),
        (timedelta(days=1), "yesterday"),
        (timedelta(days=5), "5 days ago"),
        (timedelta(days=400), "on 11 Dec 2024"),
    ],
)
def test_relative_time_in_words(ago, words):
    assert relative_time(NOW - ago, now=NOW) == words


def test_relative_time_refuses_naive_datetimes():
    with pytest.raises(ValueError):
        relative_time(datetime(2026, 1, 15, 11, 0), now=NOW)


@pytest.mark.parametrize(
    ("user_agent", "kind"),
    [
        (FIREFOX_WINDOWS, "computer"),
        (SAFARI_MAC, "computer"),
        (CHROME_ANDROID, "phone"),
        (SAFARI_IPHONE, "phone"),
        (CHROME_IPAD, "tablet"),
        (CURL, "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_device_kind_picks_the_icon(user_agent, kind):
    assert device_kind(user_agent) == kind


def test_device_kind_of_an_api_client():
    assert device_kind("python-requests/2.32.3", client_name="backup tool") == "api"


@pytest.mark.parametrize(
    ("ahead", "words"),
    [
        (timedelta(seconds=-5), "now"),
        (timedelta(0), "now"),
        (timedelta(seconds=30), "in less than a minute"),
        (timedelta(minutes=1), "in 1 minute"),
        (timedelta(minutes=14, seconds=59), "in 15 minutes"),
        (timedelta(minutes=59, seconds=50), "in 1 hour"),
        (timedelta(hours=3), "in 3 hours"),
        (timedelta(days=1), "tomorrow"),
        (timedelta(days=7), "in 7 days"),
        (timedelta(days=30), "in 30 days"),
        (timedelta(days=30, seconds=-10), "in 30 days"),
    ],
)
def test_time_until_in_words(ahead, words):
    assert time_until(NOW + ahead, now=NOW) == words


def test_exact_time_is_utc_whatever_the_zone_given():
    plus_two = timezone(timedelta(hours=2))
    assert exact_time(datetime(2026, 1, 15, 14, 0, 5, tzinfo=plus_two)) == "2026-01-15 12:00:05 UTC"


def test_every_event_kind_has_a_label():
    assert set(EVENT_LABELS) == set(EventKind)
    assert event_label("refresh_token_reused") == "Sign-in token reused: session revoked"
    # A kind a newer release wrote still reads as words.
    assert event_label("something_new") == "Something new"


# --- the page ------------------------------------------------------------------------


def browser(app, user_agent: str, ip: str):
    client = app.test_client()
    client.environ_base.update(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=ip)
    return client


@pytest.fixture
def two_browsers(app, auth):
    """alice@example.com signed in on Firefox/Windows (`laptop`) and Safari/iPhone (`phone`)."""
    auth.register()
    auth.logout()
    laptop = browser(app, FIREFOX_WINDOWS, "203.0.113.10")
    phone = browser(app, SAFARI_IPHONE, "198.51.100.7")
    for client in (laptop, phone):
        assert AuthActions(client).login().status_code == 302
    return laptop, phone


def page(client, path="/account/sessions"):
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.data, "html.parser")


def rows(soup):
    return soup.select("[data-session-id]")


def session_id_of(client) -> str:
    return client.get("/api/me").get_json()["session_id"]


def revoke(client, session_id, token=None):
    soup = page(client)
    data = {"csrf_token": token if token is not None else csrf_token_from(str(soup))}
    return client.post(f"/account/sessions/{session_id}/revoke", data=data)


def test_each_signed_in_browser_is_one_row_and_exactly_one_is_current(two_browsers, clock):
    laptop, phone = two_browsers
    soup = page(laptop)
    by_id = {row["data-session-id"]: row for row in rows(soup)}
    assert set(by_id) == {session_id_of(laptop), session_id_of(phone)}

    current = soup.select('[data-current="true"]')
    assert [row["data-session-id"] for row in current] == [session_id_of(laptop)]
    assert "This device" in current[0].get_text()
    other = by_id[session_id_of(phone)]
    assert "This device" not in other.get_text()

    assert current[0].select_one('[data-field="device"]').get_text(strip=True).startswith("Firefox 132 on Windows")
    assert other.select_one('[data-field="device"]').get_text(strip=True) == "Safari on iPhone"
    assert other.select_one('[data-field="ip"]').get_text(strip=True) == "198.51.100.7"
    assert current[0].select_one('[data-field="ip"]').get_text(strip=True) == "203.0.113.10"


def test_last_active_reads_in_words_with_the_exact_time_beside_them(two_browsers, clock):
    laptop, phone = two_browsers
    signed_in_at = clock()
    clock.advance(3 * 60 + 10)
    row = page(laptop).find(attrs={"data-session-id": session_id_of(phone)})
    last_active = row.select_one('[data-field="last-active"] time')
    assert last_active.get_text() == "3 minutes ago"
    # The exact time is on the page, not only in a tooltip a finger cannot reach; a
    # script rewrites it to the viewer's zone from `datetime`.
    exact = row.select_one('[data-field="last-active"] time[data-exact]')
    assert exact.get_text() == exact_time(signed_in_at) == "2026-01-15 12:00:00 UTC"
    assert exact["datetime"] == "2026-01-15T12:00:00+00:00"
    assert row.select_one('[data-field="signed-in"] time[data-exact]').get_text() == "2026-01-15 12:00:00 UTC"

    # The phone comes back: its last-active time moves (written at most once a minute).
    assert phone.get("/account").status_code == 200
    row = page(laptop).find(attrs={"data-session-id": session_id_of(phone)})
    assert row.select_one('[data-field="last-active"] time').get_text() == "just now"
    assert row.select_one('[data-field="signed-in"] time').get_text() == "3 minutes ago"


def test_the_nav_links_to_the_devices_page(two_browsers):
    laptop, _ = two_browsers
    assert page(laptop, "/account").find("a", string="Devices")["href"] == "/account/sessions"


def test_signing_a_device_out_refuses_it_at_its_very_next_request(two_browsers):
    laptop, phone = two_browsers
    phone_id = session_id_of(phone)
    assert phone.get("/account").status_code == 200

    response = revoke(laptop, phone_id)
    assert response.status_code == 302
    assert response.headers["Location"] == "/account/sessions"

    # No time has passed: the phone's access token has not expired, and is refused anyway.
    refused = phone.get("/account")
    assert refused.status_code == 302
    assert refused.headers["Location"].startswith("/auth/login")
    assert phone.get("/api/me").status_code == 401

    soup = page(laptop)
    assert [row["data-session-id"] for row in rows(soup)] == [session_id_of(laptop)]
    assert "Device signed out" in soup.select_one("[data-event]").get_text()


def test_signing_out_this_device_from_the_page_is_signing_out(two_browsers):
    laptop, phone = two_browsers
    laptop_id = session_id_of(laptop)
    response = revoke(laptop, laptop_id)
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"
    assert response.headers["Clear-Site-Data"] == '"cache"'
    assert laptop.get_cookie("access_token") is None and laptop.get_cookie("refresh_token") is None
    assert laptop.get("/account").status_code == 302
    # The other device is untouched.
    assert phone.get("/account").status_code == 200
    assert [row["data-session-id"] for row in rows(page(phone))] == [session_id_of(phone)]


def test_sign_out_all_other_devices_leaves_only_this_one(app, two_browsers):
    laptop, phone = two_browsers
    tablet = browser(app, CHROME_IPAD, "192.0.2.1")
    AuthActions(tablet).login()
    soup = page(laptop)
    assert len(rows(soup)) == 3
    response = laptop.post("/account/sessions/revoke-others", data={"csrf_token": csrf_token_from(str(soup))})
    assert response.status_code == 302

    soup = page(laptop)
    assert [row["data-session-id"] for row in rows(soup)] == [session_id_of(laptop)]
    assert "Signed out 2 other devices." in soup.get_text()
    assert "All other devices signed out" in soup.select_one("[data-event]").get_text()
    for client in (phone, tablet):
        assert client.get("/account").status_code == 302


def test_another_users_session_gives_404_and_changes_nothing(app, two_browsers):
    laptop, phone = two_browsers
    mallory = browser(app, CHROME_ANDROID, "192.0.2.66")
    AuthActions(mallory).register("mallory@example.com")

    unknown = revoke(mallory, "no-such-session-id-at-all-000000")
    someone_elses = revoke(mallory, session_id_of(phone))
    assert someone_elses.status_code == unknown.status_code == 404

    # The same answer: nothing tells whether the id exists. (The page's CSRF token is
    # signed with a timestamp, so the bytes may differ by a second: compare what it says.)
    def said(response) -> str:
        return BeautifulSoup(response.data, "html.parser").get_text(" ", strip=True)

    assert said(someone_elses) == said(unknown)

    assert phone.get("/account").status_code == 200
    assert len(rows(page(laptop))) == 2


def test_an_ended_session_of_ones_own_gives_404(two_browsers):
    laptop, phone = two_browsers
    phone_id = session_id_of(phone)
    assert revoke(laptop, phone_id).status_code == 302
    assert revoke(laptop, phone_id).status_code == 404


@pytest.mark.parametrize("token", ["", "not-a-csrf-token"])
@pytest.mark.parametrize("action", ["revoke", "revoke-others", "revoke-self"])
def test_posts_without_a_valid_csrf_token_get_400_and_change_nothing(two_browsers, action, token):
    laptop, phone = two_browsers
    path = {
        "revoke": f"/account/sessions/{session_id_of(phone)}/revoke",
        "revoke-others": "/account/sessions/revoke-others",
        "revoke-self": f"/account/sessions/{session_id_of(laptop)}/revoke",
    }[action]
    response = laptop.post(path, data={"csrf_token": token} if token else {})
    assert response.status_code == 400
    assert phone.get("/account").status_code == 200
    assert laptop.get("/account").status_code == 200
    assert len(rows(page(laptop))) == 2


def test_security_activity_lists_events_newest_first_with_device_and_ip(two_browsers, clock):
    laptop, phone = two_browsers
    clock.advance(60)
    revoke(laptop, session_id_of(phone))
    clock.advance(60)
    AuthActions(phone).login()

    events = page(laptop).select("[data-event]")
    labels = [event.select_one('[data-field="event"]').get_text(" ", strip=True) for event in events]
    # register, sign out, laptop sign-in, phone sign-in, device signed out, phone again.
    assert [label.split(" ")[0:2] for label in labels] == [
        ["Signed", "in"],
        ["Device", "signed"],
        ["Signed", "in"],
        ["Signed", "in"],
        ["Signed", "out"],
        ["Signed", "in"],
    ]
    newest = events[0].get_text(" ", strip=True)
    assert "Safari on iPhone" in newest and "198.51.100.7" in newest
    # "Device signed out" names the device that was signed out (the phone), not the
    # laptop that did it.
    revoked = events[1].get_text(" ", strip=True)
    assert "Safari on iPhone" in revoked and "198.51.100.7" in revoked and "1 minute ago" in revoked
    assert "Firefox" not in revoked


def test_only_the_last_20_events_are_listed(app, two_browsers, clock):
    laptop, _ = two_browsers
    for _ in range(25):
        clock.advance(1)
        AuthActions(browser(app, CURL, "192.0.2.9")).login()
    assert len(page(laptop).select("[data-event]")) == 20


def test_refresh_token_reuse_is_shown_as_an_alert(app, two_browsers, clock):
    laptop, phone = two_browsers
    stolen = phone.get_cookie("refresh_token").value
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert phone.get("/account").status_code == 200  # rotates: `stolen` is now retired
    assert phone.get("/account").status_code == 200  # with the new tokens
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    assert thief.get("/account").status_code == 302

    soup = page(laptop)
    alert = soup.select_one('[role="alert"][data-testid="reuse-alert"]')
    assert alert is not None and "used twice" in alert.get_text()
    # It names the device whose sign-in was copied, and offers what to do about it.
    assert alert.select_one('[data-field="alert-device"]').get_text(strip=True) == "Safari on iPhone"
    assert [button.get_text(strip=True) for button in alert.select("button")] == ["Secure my account", "This was me"]
    assert "Sign-in token reused" in soup.select_one("[data-event]").get_text()
    # The copy was of the phone's token: the phone's session is over too.
    assert phone.get("/account").status_code == 302


def test_no_alert_without_reuse(two_browsers):
    laptop, _ = two_browsers
    assert page(laptop).select_one('[data-testid="reuse-alert"]') is None


def test_api_client_sessions_show_the_clients_name(app, two_browsers, clock):
    laptop, _ = two_browsers
    with app.app_context():
        user = accounts.find_user(db.session, "alice@example.com")
        issued = sessions.start_session(
            db.session,
            user,
            policy=app.extensions["session_policy"],
            now=clock(),
            device=Device(user_agent="python-requests/2.32.3", ip_address="192.0.2.44", client_name="backup tool"),
        )
        db.session.commit()
    row = page(laptop).find(attrs={"data-session-id": issued.session_id})
    assert row.select_one('[data-field="device"]').get_text(strip=True) == "API client: backup tool"


# Fifty sign-ins from one address within the hour: the limits on sign-in work are not
# what this test is about.
@pytest.mark.parametrize(
    "app_config", [{"SIGN_IN_ATTEMPTS_PER_IP": "100 per minute", "NEW_SESSIONS_PER_USER_PER_HOUR": 100}]
)
def test_the_51st_sign_in_ends_the_least_recently_active_session(app, auth, clock):
    auth.register()
    first = auth.client
    ids = [session_id_of(first)]
    for _ in range(49):
        clock.advance(120)
        client = browser(app, CURL, "192.0.2.1")
        AuthActions(client).login()
        ids.append(session_id_of(client))
        if len(ids) == 2:
            least_recent = client
    # The first browser is the oldest but was just used; the second is now the least
    # recently active one.
    clock.advance(120)
    assert first.get("/account").status_code == 200
    least_recent_id = ids[1]
    with app.app_context():
        user_id = accounts.find_user(db.session, "alice@example.com").id
        assert len(sessions.list_active_sessions(db.session, user_id=user_id, now=clock())) == 50

    clock.advance(120)
    newcomer = browser(app, FIREFOX_WINDOWS, "203.0.113.99")
    assert AuthActions(newcomer).login().status_code == 302

    assert least_recent.get("/account").status_code == 302
    assert first.get("/account").status_code == 200
    assert newcomer.get("/account").status_code == 200
    with app.app_context():
        assert len(sessions.list_active_sessions(db.session, user_id=user_id, now=clock())) == 50
        event = db.session.execute(
            select(SecurityEvent).where(SecurityEvent.kind == str(EventKind.SESSION_LIMIT_REACHED))
        ).scalar_one()
        assert event.session_public_id == least_recent_id
        ended = db.session.execute(select(Session).where(Session.public_id == least_recent_id)).scalar_one()
        assert ended.revoked_reason == "session_limit"
        assert (
            db.session.execute(
                select(func.count()).select_from(Session).where(Session.revoked_at.is_not(None))
            ).scalar_one()
            == 1
        )
    assert "Signed out: too many devices" in page(newcomer).get_text()


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/account/sessions")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=/account/sessions"
