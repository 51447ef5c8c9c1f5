"""Failed sign-ins are rate limited per account and per IP address: 429 with Retry-After
and a security event. Successful sign-ins never count. Storage is memory:// here, and
the real Redis on 127.0.0.1:6379 when it answers; a dead Redis fails open."""

from __future__ import annotations

import logging
import secrets
import time

import pytest
import redis
from bs4 import BeautifulSoup
from flask import jsonify
from sqlalchemy import select

from webapp.auth import ratelimit
from webapp.extensions import csrf, db, limiter
from webapp.models import SecurityEvent

from .conftest import PASSWORD, AuthActions

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5) as connection:
            return bool(connection.ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request) -> str:
    if request.param == "redis":
        if not redis_answers():
            pytest.skip(f"no Redis answers at {REDIS_URL}: the Redis variant needs one")
        return REDIS_URL
    return "memory://"


@pytest.fixture
def app_config(storage_uri):
    return {
        "RATELIMIT_STORAGE_URI": storage_uri,
        "LOGIN_LIMIT_PER_ACCOUNT": "3 per 15 minutes",
        "LOGIN_LIMIT_PER_IP": "5 per 15 minutes",
    }


@pytest.fixture
def email(app) -> str:
    """A fresh account: Redis keeps counters between runs, so names never repeat."""
    address = f"alice-{secrets.token_hex(4)}@example.com"
    signup = app.test_client()
    AuthActions(signup).register(address)
    AuthActions(signup).logout()
    return address


def client_from(app, ip: str | None = None):
    client = app.test_client()
    # A fresh address per test too: the per-IP counters live in Redis as well.
    client.environ_base["REMOTE_ADDR"] = (
        ip or f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    )
    return client


def attempt(client, email, password):
    return AuthActions(client).login(email=email, password=password)


def rate_limited_events(app) -> list[SecurityEvent]:
    with app.app_context():
        return list(
            db.session.execute(select(SecurityEvent).where(SecurityEvent.kind == "sign_in_rate_limited")).scalars()
        )


def test_failed_attempts_per_account_end_in_429_with_retry_after(app, email):
    client = client_from(app)
    for _ in range(3):
        response = attempt(client, email, "wrong password")
        assert response.status_code == 200
        assert "Incorrect email or password." in response.get_data(as_text=True)

    refused = attempt(client, email, PASSWORD)  # even the right password, now
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts" in BeautifulSoup(refused.data, "html.parser").get_text()
    assert client.get("/api/me").status_code == 401

    # The limit is the account's, from any address; other accounts are untouched.
    assert attempt(client_from(app), email, PASSWORD).status_code == 429


def test_counters_live_in_the_storage_rate_limit_storage_uri_names(app, email, storage_uri):
    attempt(client_from(app), email, "wrong password")
    with app.test_request_context("/auth/login", method="POST", data={"email": email}):
        digest = ratelimit.account_key().removeprefix("account:")
    if storage_uri.startswith("redis://"):
        with redis.Redis.from_url(storage_uri) as connection:
            keys = list(connection.scan_iter(match=f"*account:{digest}/sign-in-account*"))
        assert len(keys) == 1
    else:
        assert type(limiter.storage).__name__ == "MemoryStorage"
        assert any(digest in key for key in limiter.storage.storage)


def test_a_limit_hit_is_a_security_event_of_the_account(app, email):
    # Fresh addresses: with Redis, a fixed one would start with the failures of earlier
    # runs (kept 15 minutes) and hit the address limit instead of the account's.
    owner = client_from(app)
    assert attempt(owner, email, PASSWORD).status_code == 302

    attacker = client_from(app)
    attacker_ip = attacker.environ_base["REMOTE_ADDR"]
    for _ in range(3):
        attempt(attacker, email, "wrong password")
    for _ in range(3):
        assert attempt(attacker, email, "wrong password").status_code == 429
    events = rate_limited_events(app)
    # One event, not one per refused request: an attacker cannot flood the list.
    assert len(events) == 1

    # The owner, still signed in elsewhere, sees it with the attacker's address.
    row = BeautifulSoup(owner.get("/account/sessions").data, "html.parser").select_one("[data-event]")
    assert "Too many sign-in attempts" in row.get_text()
    assert attacker_ip in row.get_text()


def test_successful_sign_ins_never_count(app, email):
    client = client_from(app)
    for _ in range(6):
        assert attempt(client, email, PASSWORD).status_code == 302
        AuthActions(client).logout()
    # Two failures after six successes: still under the limit of three.
    for _ in range(2):
        assert attempt(client, email, "wrong password").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 302


def test_failed_attempts_per_ip_address_end_in_429(app):
    client = client_from(app)
    for n in range(5):
        # A different (unknown) email each time: only the address limit applies.
        assert attempt(client, f"nobody-{n}-{secrets.token_hex(3)}@example.com", "guess").status_code == 200
    assert attempt(client, f"nobody-{secrets.token_hex(3)}@example.com", "guess").status_code == 429
    # Another address is not affected.
    assert attempt(client_from(app), f"nobody-{secrets.token_hex(3)}@example.com", "guess").status_code == 200


def test_a_breach_by_an_address_no_database_can_store_is_a_429_and_no_false_alarm(app, caplog):
    # JSON can carry a lone surrogate; no stored email holds one, and drivers refuse it.
    client = client_from(app)
    for n in range(5):
        assert attempt(client, f"nobody-{n}-{secrets.token_hex(3)}@example.com", "guess").status_code == 200
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/api/auth/token",
            data=b'{"email": "\\ud800@example.com", "password": "guess", "client_name": "x"}',
            content_type="application/json",
        )
    assert response.status_code == 429 and response.json["error"] == "too_many_attempts"
    assert "Retry-After" in response.headers
    # Nothing went wrong with the limiter's storage, and nothing says it did.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text


def test_the_account_key_is_the_normalised_email(app, email):
    client = client_from(app)
    for variant in (email.upper(), f"  {email}  ", email.title()):
        assert attempt(client, variant, "wrong password").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 429


def test_a_form_error_that_checks_no_password_does_not_count(app, email):
    client = client_from(app)
    for _ in range(5):
        assert attempt(client, email, "").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 302


@pytest.fixture
def json_sign_in_route(app):
    """A JSON endpoint wearing `limit_sign_in` that always fails, as POST /api/auth/token
    does for a wrong password. Added before the app serves its first request."""

    @app.post("/test-json-sign-in")
    @csrf.exempt  # bearer clients send no cookies, so no CSRF token either
    @ratelimit.limit_sign_in
    def json_sign_in():
        ratelimit.note_failed_sign_in()
        return jsonify(error="invalid_credentials"), 401

    return "/test-json-sign-in"


def test_json_sign_ins_share_the_limits(app, json_sign_in_route, email):
    """Failures at a JSON endpoint count against the same budget as the form, keyed by
    the email in the JSON body."""
    client = client_from(app)
    for _ in range(2):
        assert client.post(json_sign_in_route, json={"email": email.upper(), "password": "x"}).status_code == 401
    assert attempt(client_from(app), email, "wrong password").status_code == 200
    assert client.post(json_sign_in_route, json={"email": email, "password": "x"}).status_code == 429
    assert attempt(client_from(app), email, PASSWORD).status_code == 429


@pytest.mark.parametrize("body", [None, [], "text", {"email": 42}, {"email": None}])
def test_json_keys_survive_odd_bodies(app, body):
    with app.test_request_context("/api/auth/token", method="POST", json=body):
        assert ratelimit.submitted_email() == ""
        assert ratelimit.account_key().startswith("account:")


def test_csrf_failures_do_not_count(app, email):
    client = client_from(app)
    for _ in range(5):
        assert client.post("/auth/login", data={"email": email, "password": "wrong"}).status_code == 400
    assert attempt(client, email, PASSWORD).status_code == 302


# The window opens at the first failure and must still be open at the third attempt: a
# one-second window left little room for three sign-ins on a loaded machine.
WINDOW = 3


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_ACCOUNT": f"2 per {WINDOW} seconds"}])
def test_the_right_password_gets_in_after_the_window(app, email):
    client = client_from(app)
    for _ in range(2):
        attempt(client, email, "wrong password")
    refused = attempt(client, email, PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) <= WINDOW
    # Flask-Limiter keeps real time: the one short wait of the suite.
    time.sleep(WINDOW + 0.1)
    assert attempt(client, email, PASSWORD).status_code == 302
    assert client.get("/api/me").status_code == 200


@pytest.mark.parametrize(
    "app_config", [{"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0", "LOGIN_LIMIT_PER_ACCOUNT": "1 per 15 minutes"}]
)
def test_sign_in_fails_open_when_the_limit_storage_is_down(app, email, caplog):
    client = client_from(app)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert attempt(client, email, "wrong password").status_code == 200
        assert attempt(client, email, PASSWORD).status_code == 302
    assert client.get("/api/me").status_code == 200
    # Logged once, when the outage was first met (signing up, in the fixture), not per attempt.
    logged = caplog.get_records("setup") + caplog.records
    assert [record.levelname for record in logged if "rate limit storage unreachable" in record.getMessage()] == [
        "WARNING"
    ]


def test_guessing_the_current_password_of_a_hijacked_session_is_limited(app, email):
    browser = client_from(app)
    AuthActions(browser).login(email=email)
    for _ in range(3):
        page = browser.get("/account/password")
        token = BeautifulSoup(page.data, "html.parser").find("input", {"name": "csrf_token"})["value"]
        response = browser.post(
            "/account/password",
            data={
                "current_password": "a wrong guess",
                "new_password": "n" * 12,
                "confirm": "n" * 12,
                "csrf_token": token,
            },
        )
        assert response.status_code == 200
    page = browser.get("/account/password")
    token = BeautifulSoup(page.data, "html.parser").find("input", {"name": "csrf_token"})["value"]
    limited = browser.post(
        "/account/password",
        data={"current_password": PASSWORD, "new_password": "n" * 12, "confirm": "n" * 12, "csrf_token": token},
    )
    assert limited.status_code == 429
    # The guesses spent the account's sign-in budget, and the password did not change.
    assert attempt(client_from(app), email, PASSWORD).status_code == 429
    with app.app_context():
        from webapp import accounts

        assert accounts.check_credentials(db.session, email, PASSWORD, rounds=4) is not None


def test_probing_which_emails_have_accounts_through_registration_is_limited(app, email):
    prober = client_from(app)
    answers = [AuthActions(prober).register(email).status_code for _ in range(4)]
    # "Already exists" three times, then the account's sign-in budget is spent.
    assert answers == [200, 200, 200, 429]


def test_parallel_failed_attempts_cannot_overshoot_the_limit(app, email):
    # 30 wrong passwords at once for an account allowed 3 failures: each attempt takes its
    # place in the budget before its password is checked, so exactly 3 are checked.
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(30)
    address = client_from(app).environ_base["REMOTE_ADDR"]

    def attempt_in_parallel(_):
        api = client_from(app, ip=address)
        barrier.wait()
        return api.post("/api/auth/token", json={"email": email, "password": "a wrong guess"}).status_code

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(attempt_in_parallel, range(30)))
    assert answers.count(401) == 3
    assert answers.count(429) == 27


def test_successes_and_refusals_give_their_place_back(app, email):
    browser = client_from(app)
    for _ in range(5):  # more successes than the budget of 3 failures
        assert attempt(browser, email, PASSWORD).status_code == 302
        AuthActions(browser).logout()
    for _ in range(3):
        assert attempt(browser, email, "a wrong guess").status_code == 200
    assert attempt(browser, email, PASSWORD).status_code == 429
