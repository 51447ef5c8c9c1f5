"""Bearer tokens for clients that are not browsers: the JSON endpoints, `Authorization:
Bearer` on /api/, and how those sessions share the engine with the browsers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import SecurityEvent, Session

from .conftest import PASSWORD, AuthActions, cookie_value, csrf_token_from


@pytest.fixture
def user(auth, client):
    auth.register()
    auth.logout()
    client.delete_cookie("session")
    return "alice@example.com"


def sign_in(client, email="alice@example.com", password=PASSWORD, client_name="backup-script"):
    return client.post("/api/auth/token", json={"email": email, "password": password, "client_name": client_name})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_sign_in_returns_a_token_pair_and_sets_no_cookie(app, user, clock):
    api = app.test_client()
    # Time passes while the request is served: the token still says its full lifetime.
    app.config["CLOCK"] = lambda: clock.advance(0.001)
    response = sign_in(api)
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.config["ACCESS_TOKEN_TTL"]
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "session_id"}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    me = api.get("/api/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json == {"email": "alice@example.com", "session_id": body["session_id"]}
    assert "Set-Cookie" not in me.headers


@pytest.mark.parametrize(
    ("email", "password"), [("alice@example.com", "wrong password"), ("nobody@example.com", PASSWORD)]
)
def test_wrong_credentials_are_invalid_grant_with_one_message(app, user, email, password):
    response = sign_in(app.test_client(), email=email, password=password)
    assert response.status_code == 401
    assert response.json == {"error": "invalid_grant", "message": "Incorrect email or password."}


def test_form_post_to_the_token_endpoint_is_415_and_sets_nothing(app, user):
    api = app.test_client()
    response = api.post(
        "/api/auth/token", data={"email": "alice@example.com", "password": PASSWORD, "client_name": "x"}
    )
    assert response.status_code == 415
    assert "Set-Cookie" not in response.headers
    with app.app_context():
        assert db.session.execute(select(Session).where(Session.client_name.is_not(None))).first() is None


@pytest.mark.parametrize(
    "body", [[], "x", {"email": 1, "password": PASSWORD}, {"email": "a@b.c"}, {"email": "a@b.c", "password": None}]
)
def test_malformed_json_is_400(app, user, body):
    response = app.test_client().post("/api/auth/token", json=body)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_broken_json_is_400(app, user):
    response = app.test_client().post("/api/auth/token", data="{not json", content_type="application/json")
    assert response.status_code == 400


def test_refresh_rotates_and_the_grace_window_serves_without_handing_out_the_new_token(app, user, clock):
    api = app.test_client()
    first = sign_in(api).json
    rotated = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    assert rotated.json["refresh_token"] != first["refresh_token"]
    assert rotated.json["session_id"] == first["session_id"]
    again = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 200
    # A retry inside the grace window gets a working access token and keeps the refresh
    # token it has: a copy of a retired token must never yield the current one.
    assert again.json["refresh_token"] == first["refresh_token"]
    assert api.get("/api/me", headers=bearer(again.json["access_token"])).status_code == 200


def test_reuse_after_the_grace_window_ends_the_session_for_both_holders(app, user, clock):
    api = app.test_client()
    first = sign_in(api).json
    current = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]}).json
    assert api.get("/api/me", headers=bearer(current["access_token"])).status_code == 200  # delivered
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    stolen = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401 and stolen.json["error"] == "invalid_grant"
    assert api.post("/api/auth/refresh", json={"refresh_token": current["refresh_token"]}).status_code == 401
    me = api.get("/api/me", headers=bearer(current["access_token"]))
    assert me.status_code == 401
    with app.app_context():
        event = db.session.execute(
            select(SecurityEvent).where(SecurityEvent.kind == "refresh_token_reused")
        ).scalar_one()
        assert event.client_name == "backup-script"


def test_expired_bearer_token_is_401_with_www_authenticate(app, user, clock):
    api = app.test_client()
    tokens = sign_in(api).json
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    response = api.get("/api/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "Set-Cookie" not in response.headers
    # The client refreshes and retries, as examples/client.py does.
    fresh = api.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json
    assert api.get("/api/me", headers=bearer(fresh["access_token"])).status_code == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "bearer garbage", "Bearer garbage", "Bearer a.b.c"])
def test_bad_authorization_headers_are_401(app, user, header):
    response = app.test_client().get("/api/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer error=")


def test_revoke_ends_the_session_and_always_answers_200(app, user):
    api = app.test_client()
    tokens = sign_in(api).json
    assert api.post("/api/auth/revoke", json={"refresh_token": "not-a-token"}).status_code == 200
    assert api.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 200
    response = api.post("/api/auth/revoke", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert api.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert api.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert api.post("/api/auth/revoke", json={"refresh_token": tokens["refresh_token"]}).status_code == 200


def test_bearer_request_with_another_users_cookies_acts_as_the_bearer(app, auth, client, user):
    api_tokens = sign_in(app.test_client()).json
    auth.register(email="mallory@example.com")  # `client` now holds Mallory's cookies
    response = client.get("/api/me", headers=bearer(api_tokens["access_token"]))
    assert response.json["email"] == "alice@example.com"
    assert "Set-Cookie" not in response.headers
    # A bad bearer token is not rescued by the cookies either.
    assert client.get("/api/me", headers=bearer("nonsense")).status_code == 401


def test_bearer_session_is_listed_and_can_be_signed_out_from_the_sessions_page(app, auth, client, user):
    api = app.test_client()
    tokens = sign_in(api).json
    auth.login()
    page = client.get("/account/sessions")
    assert "API client: backup-script" in page.get_data(as_text=True)
    token = csrf_token_from(page.data)
    response = client.post(f"/account/sessions/{tokens['session_id']}/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    # Signed out at its very next call, though its access token has not expired.
    assert api.get("/api/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert client.get("/api/me").status_code == 200  # the browser is untouched


def test_disabled_user_cannot_get_tokens(app, user, runner):
    result = runner.invoke(args=["users", "disable", "alice@example.com"])
    assert result.exit_code == 0
    response = sign_in(app.test_client())
    assert response.status_code == 401 and response.json["error"] == "invalid_grant"


@pytest.mark.parametrize("path", ["/auth/logout", "/auth/refresh"])
def test_a_bearer_header_does_not_exempt_a_browser_post_outside_api_from_csrf(app, auth, client, user, path):
    auth.login()
    refresh_before = cookie_value(client, "refresh_token")
    # Outside /api/ the header is not a bearer request: the browser's cookies still sign
    # the request in, so a forged POST that adds the header is refused like any other.
    response = client.post(path, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 400
    assert cookie_value(client, "refresh_token") == refresh_before  # neither cleared nor rotated
    assert client.get("/api/me").status_code == 200  # still signed in


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_ACCOUNT": "2 per 15 minutes"}])
def test_failed_token_requests_share_the_sign_in_limits(app, auth, user, app_config):
    api = app.test_client()
    for _ in range(2):
        assert sign_in(api, password="wrong password").status_code == 401
    limited = sign_in(api)  # even the right password, until the window passes
    assert limited.status_code == 429
    assert limited.json["error"] == "too_many_attempts"
    assert int(limited.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in limited.headers
    # The form shares the budget: the same account is limited there too, for any browser
    # that has not signed in to it before (this client registered it: it would get in).
    assert AuthActions(app.test_client()).login().status_code == 429


def test_other_authorization_schemes_leave_cookie_sign_in_alone(app, auth, client, user):
    # A proxy's Basic auth in front of the app must not break the browser's session.
    auth.login()
    response = client.get("/api/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 200 and response.json["email"] == "alice@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 30000,
        '{"email": "\\ud800@example.com", "password": "x" }',
        '{"email": "alice@example.com", "password": "correct horse battery staple", "client_name": "\\udfff"}',
    ],
)
@pytest.mark.parametrize("path", ["/api/auth/token", "/api/auth/refresh", "/api/auth/revoke"])
def test_hostile_json_is_400_not_500(app, user, path, raw):
    response = app.test_client().post(path, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
