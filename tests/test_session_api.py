"""The JSON the account page's script reads: this session's times and recent activity."""

from __future__ import annotations

from datetime import datetime, timedelta

from .conftest import CHROME_UA, PASSWORD, AuthActions


def test_session_times_follow_the_session(client, auth, app, clock):
    auth.register()
    signed_in_at = clock.now
    body = client.get("/api/session").json
    me = client.get("/api/me").json
    assert body["session_id"] == me["session_id"]
    assert datetime.fromisoformat(body["now"]) == signed_in_at
    assert datetime.fromisoformat(body["created_at"]) == signed_in_at
    assert datetime.fromisoformat(body["access_expires_at"]) == signed_in_at + timedelta(
        seconds=app.config["ACCESS_TOKEN_TTL"]
    )
    assert datetime.fromisoformat(body["idle_expires_at"]) == signed_in_at + timedelta(
        seconds=app.config["REFRESH_TOKEN_TTL"]
    )
    assert datetime.fromisoformat(body["expires_at"]) == signed_in_at + timedelta(seconds=app.config["SESSION_MAX_AGE"])
    assert body["persistent"] is False

    # After expiry the request rotates: the answer names the new access token's expiry
    # and the moved idle end, while the absolute end stays put.
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 5)
    later = client.get("/api/session").json
    assert datetime.fromisoformat(later["access_expires_at"]) == clock.now + timedelta(
        seconds=app.config["ACCESS_TOKEN_TTL"]
    )
    assert datetime.fromisoformat(later["idle_expires_at"]) == clock.now + timedelta(
        seconds=app.config["REFRESH_TOKEN_TTL"]
    )
    assert later["expires_at"] == body["expires_at"]


def test_security_events_newest_first_with_words(client, auth, clock):
    client.environ_base["HTTP_USER_AGENT"] = CHROME_UA
    auth.register()
    auth.logout()
    clock.advance(60)  # the newest event's time is not the others'
    auth.login()
    response = client.get("/api/security-events")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    events = response.json["events"]
    assert [event["kind"] for event in events] == ["signed_in", "signed_out", "signed_in"]
    newest = events[0]
    assert newest["label"] == "Signed in"
    assert newest["device"] == "Chrome 131 on Windows"
    assert newest["ip_address"] == "127.0.0.1"
    assert newest["this_session"] is True and events[2]["this_session"] is False
    assert newest["alarming"] is False
    assert datetime.fromisoformat(newest["created_at"]) == clock.now


def test_security_events_show_only_the_users_own(app, client, auth):
    auth.register(email="alice@example.com")
    other = app.test_client()
    AuthActions(other).register(email="bob@example.com", password=PASSWORD)
    assert len(client.get("/api/security-events").json["events"]) == 1
    assert len(other.get("/api/security-events").json["events"]) == 1


def test_signed_out_gets_401_json(client):
    for path in ("/api/session", "/api/security-events"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.json["error"] == "not_signed_in"
