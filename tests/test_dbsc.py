"""Device-bound sessions (DBSC), spoken by a client of our own: an EC P-256 key from
`cryptography`, JWTs from PyJWT, the wire format Chromium uses (../shared/DBSC.md).

Over HTTPS (the test client's https:// base URL), with the testing settings' cookie
names. A copied cookie jar is a second client holding the same cookies and no key.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from bs4 import BeautifulSoup
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select

from webapp.device_binding import UNBOUND, ChallengePurpose, make_challenge
from webapp.extensions import db
from webapp.models import SecurityEvent, Session

from .conftest import CHROME_UA, PASSWORD, csrf_token_from

HTTPS = "https://localhost"
EMAIL = "alice@example.com"
ACCESS_TTL = 900
_REGISTRATION = re.compile(r'^\(ES256 RS256\);path="/auth/dbsc/register";challenge="([^"]+)"$')
_CHALLENGE = re.compile(r'^"([^"]+)";id="([^"]+)"$')


class DeviceKey:
    """A browser's device key: signs registrations and refresh answers."""

    def __init__(self, kind: str = "ES256"):
        self.algorithm = kind
        if kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)

    def registration(self, challenge: str, *, signed_by: DeviceKey | None = None) -> str:
        signer = signed_by or self
        return jwt.encode(
            {"jti": challenge},
            signer.private,
            algorithm=self.algorithm,
            headers={"typ": "dbsc+jwt", "jwk": self.jwk},
        )

    def answer(self, challenge: str) -> str:
        return jwt.encode({"jti": challenge}, self.private, algorithm=self.algorithm, headers={"typ": "dbsc+jwt"})


class Browser:
    """A test client speaking HTTPS, as a browser on one machine (its own cookie jar)."""

    def __init__(self, app, user_agent: str = CHROME_UA):
        self.client = app.test_client()
        self.client.environ_base.update(HTTP_USER_AGENT=user_agent, HTTP_REFERER=HTTPS + "/")

    def get(self, path: str, **kwargs):
        return self.client.get(path, base_url=HTTPS, **kwargs)

    def post(self, path: str, **kwargs):
        return self.client.post(path, base_url=HTTPS, **kwargs)

    def sign_in(self, email: str = EMAIL, password: str = PASSWORD):
        token = csrf_token_from(self.get("/auth/login").data)
        self.signed_in_by = self.post("/auth/login", data={"email": email, "password": password, "csrf_token": token})
        return self.signed_in_by

    def register_account(self, email: str = EMAIL):
        token = csrf_token_from(self.get("/auth/register").data)
        data = {"email": email, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token}
        self.signed_in_by = self.post("/auth/register", data=data)
        return self.signed_in_by

    def cookie(self, name: str) -> str | None:
        cookie = self.client.get_cookie(name, domain="localhost")
        return None if cookie is None else cookie.value

    def copy_cookies_to(self, other: Browser) -> None:
        for name in ("access_token", "refresh_token"):
            other.client.set_cookie(name, self.cookie(name), domain="localhost", secure=False)

    def session_id(self) -> str:
        return self.get("/api/me").json["session_id"]

    def refresh(self, session_id: str, proof: str | None = None):
        headers = {"Sec-Secure-Session-Id": session_id}
        if proof is not None:
            headers["Secure-Session-Response"] = proof
        return self.post("/auth/dbsc/refresh", headers=headers)


def registration_challenge(response) -> str:
    match = _REGISTRATION.match(response.headers.get("Secure-Session-Registration", ""))
    assert match, response.headers.get("Secure-Session-Registration")
    return match[1]


def refresh_challenge(response, session_id: str) -> str:
    assert response.status_code == 403
    match = _CHALLENGE.match(response.headers["Secure-Session-Challenge"])
    assert match and match[2] == session_id
    return match[1]


def bind(browser: Browser, key: DeviceKey, *, offer=None):
    """Register `key` for the browser's session, as Chrome does on the offer that came
    with its sign-in."""
    offer = offer if offer is not None else browser.signed_in_by
    return browser.post(
        "/auth/dbsc/register", headers={"Secure-Session-Response": key.registration(registration_challenge(offer))}
    )


def refresh_with(browser: Browser, key: DeviceKey, session_id: str):
    """The two-phase refresh: ask, get a challenge, answer it."""
    return browser.refresh(session_id, key.answer(refresh_challenge(browser.refresh(session_id), session_id)))


def session_row(app, session_id: str) -> Session:
    with app.app_context():
        return db.session.execute(select(Session).where(Session.public_id == session_id)).scalar_one()


def copy_alerts(app) -> list[SecurityEvent]:
    with app.app_context():
        return list(
            db.session.execute(select(SecurityEvent).where(SecurityEvent.kind == "copied_sign_in_refused")).scalars()
        )


@pytest.fixture
def laptop(app) -> Browser:
    browser = Browser(app)
    assert browser.register_account().status_code == 302
    return browser


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey()


@pytest.fixture
def bound(app, laptop, key) -> str:
    """The laptop's session, bound to `key`; its id."""
    assert bind(laptop, key).status_code == 200
    return laptop.session_id()


# --- the offer ---------------------------------------------------------------------------------


def test_signing_in_over_https_offers_registration(app, laptop):
    answer = Browser(app).sign_in()
    assert answer.status_code == 302
    registration_challenge(answer)
    registration_challenge(laptop.signed_in_by)  # registration signs in too
    # Once: the pages that follow would each cost the browser another key and signature.
    assert "Secure-Session-Registration" not in laptop.get("/account").headers


def test_no_offer_over_plain_http_to_bearer_clients_or_when_switched_off(app, laptop, database_url, clock):
    plain = app.test_client()
    token = csrf_token_from(plain.get("/auth/login").data)
    answer = plain.post("/auth/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302
    assert "Secure-Session-Registration" not in answer.headers
    assert "Secure-Session-Registration" not in plain.get("/account").headers

    tokens = app.test_client().post("/api/auth/token", json={"email": EMAIL, "password": PASSWORD}).json
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert "Secure-Session-Registration" not in laptop.get("/api/session", headers=bearer).headers

    from .conftest import make_app

    off = make_app(database_url, clock, environ={"DEVICE_BOUND_SESSIONS": "off"})
    browser = Browser(off)
    assert browser.sign_in().status_code == 302
    assert "Secure-Session-Registration" not in browser.get("/account").headers
    assert browser.post("/auth/dbsc/register").status_code == 404


# --- registration ------------------------------------------------------------------------------


def test_registration_binds_the_session_and_describes_it(app, laptop, key):
    session_id = laptop.session_id()
    old_access = laptop.cookie("access_token")
    old_refresh = laptop.cookie("refresh_token")

    answer = bind(laptop, key)
    assert answer.status_code == 200
    assert answer.json == {
        "session_identifier": session_id,
        "refresh_url": "/auth/dbsc/refresh",
        "scope": {
            "include_site": False,
            "scope_specification": [
                {"type": "exclude", "domain": "localhost", "path": "/static/"},
                {"type": "exclude", "domain": "localhost", "path": "/healthz"},
                {"type": "exclude", "domain": "localhost", "path": "/api/"},
            ],
        },
        "credentials": [{"type": "cookie", "name": "access_token", "attributes": "Path=/; HttpOnly; SameSite=Lax"}],
    }
    # A fresh access cookie, the refresh cookie as it was.
    assert laptop.cookie("access_token") not in (None, old_access)
    assert laptop.cookie("refresh_token") == old_refresh
    # The key is stored, public members only.
    row = session_row(app, session_id)
    assert row.device_bound_at is not None
    assert '"d"' not in row.device_key and key.jwk["x"] in row.device_key

    # No more offers; the devices page and the session API say it is bound.
    page = laptop.get("/account/sessions")
    assert "Secure-Session-Registration" not in page.headers
    [mine] = BeautifulSoup(page.data, "html.parser").select("[data-current=true]")
    assert mine["data-device-bound"] == "true"
    assert "Bound to this device" in mine.get_text()
    assert laptop.get("/api/session").json["device_bound"] is True


def test_an_rsa_key_binds_too(app, laptop):
    assert bind(laptop, DeviceKey("RS256")).status_code == 200


def test_a_bound_session_is_never_registered_again(app, laptop, key):
    offer = laptop.signed_in_by
    assert bind(laptop, key, offer=offer).status_code == 200
    again = bind(laptop, DeviceKey(), offer=offer)
    assert again.status_code == 403
    assert again.json["error"] == "not_bindable"
    assert key.jwk["x"] in session_row(app, laptop.session_id()).device_key


@pytest.mark.parametrize(
    "make_proof",
    [
        pytest.param(lambda key, challenge: key.registration(challenge, signed_by=DeviceKey()), id="not-its-own-key"),
        pytest.param(lambda key, challenge: key.registration("1.-." + "A" * 43), id="a-challenge-not-ours"),
        pytest.param(
            lambda key, challenge: jwt.encode(
                {"jti": challenge}, "secret" * 8, algorithm="HS256", headers={"jwk": key.jwk}
            ),
            id="hs256",
        ),
        pytest.param(
            lambda key, challenge: jwt.encode({"jti": challenge}, None, algorithm="none", headers={"jwk": key.jwk}),
            id="alg-none",
        ),
        pytest.param(lambda key, challenge: key.answer(challenge), id="no-jwk"),
        pytest.param(lambda key, challenge: "not.a.jwt", id="malformed"),
        pytest.param(lambda key, challenge: "", id="missing"),
        pytest.param(lambda key, challenge: "e" * 5000, id="oversized"),
        pytest.param(
            lambda key, challenge: jwt.encode(
                {"jti": challenge},
                key.private,
                algorithm="ES256",
                headers={"typ": "dbsc+jwt", "jwk": {**key.jwk, "crv": "P-384"}},
            ),
            id="wrong-curve",
        ),
        pytest.param(
            lambda key, challenge: jwt.encode({"jti": 7}, key.private, algorithm="ES256", headers={"jwk": key.jwk}),
            id="jti-not-a-string",
        ),
    ],
)
def test_a_bad_registration_is_refused_and_binds_nothing(app, laptop, key, make_proof):
    challenge = registration_challenge(laptop.signed_in_by)
    answer = laptop.post("/auth/dbsc/register", headers={"Secure-Session-Response": make_proof(key, challenge)})
    assert answer.status_code in (400, 403)
    assert session_row(app, laptop.session_id()).device_key is None


def test_another_sessions_or_a_stale_challenge_is_refused(app, laptop, key, clock):
    phone = Browser(app)
    phone.sign_in()
    phones_challenge = registration_challenge(phone.signed_in_by)
    answer = laptop.post("/auth/dbsc/register", headers={"Secure-Session-Response": key.registration(phones_challenge)})
    assert answer.status_code == 403

    stale = registration_challenge(laptop.signed_in_by)
    clock.advance(6 * 60)
    assert laptop.get("/account").status_code == 200
    answer = laptop.post("/auth/dbsc/register", headers={"Secure-Session-Response": key.registration(stale)})
    assert answer.status_code == 403
    assert session_row(app, laptop.session_id()).device_key is None


def test_registration_needs_a_signed_in_browser(app, key):
    stranger = Browser(app)
    answer = stranger.post("/auth/dbsc/register", headers={"Secure-Session-Response": key.registration("x")})
    assert answer.status_code == 401


# --- refresh -----------------------------------------------------------------------------------


def test_the_two_phase_refresh_rotates_the_session(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    old_access, old_refresh = laptop.cookie("access_token"), laptop.cookie("refresh_token")
    counter = session_row(app, bound).counter

    first = laptop.refresh(bound)
    challenge = refresh_challenge(first, bound)
    assert laptop.cookie("refresh_token") == old_refresh  # nothing yet

    answer = laptop.refresh(bound, key.answer(challenge))
    assert answer.status_code == 200
    assert answer.json["session_identifier"] == bound
    assert laptop.cookie("access_token") != old_access
    assert laptop.cookie("refresh_token") != old_refresh
    assert session_row(app, bound).counter == counter + 1
    # The held-back request goes out with the new cookie.
    assert laptop.get("/account").status_code == 200
    # Operators see one registration, one challenge, one renewal and its rotation.
    counted = app.extensions["metrics"].registry.get_sample_value
    assert counted("webapp_dbsc_registrations_total", {"outcome": "bound"}) == 1
    assert counted("webapp_dbsc_refreshes_total", {"outcome": "challenged"}) == 1
    assert counted("webapp_dbsc_refreshes_total", {"outcome": "renewed"}) == 1
    assert counted("webapp_rotations_total") == 1


def test_an_answer_is_accepted_once(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    proof = key.answer(refresh_challenge(laptop.refresh(bound), bound))
    assert laptop.refresh(bound, proof).status_code == 200
    counter = session_row(app, bound).counter
    # Replayed: the counter it was made for has moved on. A new challenge, nothing rotated.
    replay = laptop.refresh(bound, proof)
    refresh_challenge(replay, bound)
    assert session_row(app, bound).counter == counter


def test_a_stale_challenge_gets_a_new_one_and_rotates_nothing(app, laptop, key, bound, clock):
    challenge = refresh_challenge(laptop.refresh(bound), bound)
    clock.advance(6 * 60)
    counter = session_row(app, bound).counter
    refresh_challenge(laptop.refresh(bound, key.answer(challenge)), bound)
    assert session_row(app, bound).counter == counter


@pytest.mark.parametrize(
    ("proof", "status"),
    [
        pytest.param(lambda challenge: DeviceKey().answer(challenge), 401, id="another-key"),
        pytest.param(lambda challenge: DeviceKey("RS256").answer(challenge), 401, id="another-algorithm"),
        pytest.param(lambda challenge: "garbage", 401, id="malformed"),
        pytest.param(lambda challenge: "x" * 10_000, 401, id="oversized"),
    ],
)
def test_a_proof_not_from_the_device_rotates_nothing(app, laptop, bound, clock, proof, status):
    clock.advance(ACCESS_TTL + 60)
    refresh_cookie, counter = laptop.cookie("refresh_token"), session_row(app, bound).counter
    answer = laptop.refresh(bound, proof(refresh_challenge(laptop.refresh(bound), bound)))
    assert answer.status_code == status
    assert laptop.cookie("refresh_token") == refresh_cookie
    assert session_row(app, bound).counter == counter


@pytest.mark.parametrize("session_id", ["", "not a session id!", "A" * 65, "unknown-session-id"])
def test_a_missing_malformed_or_unknown_session_id_is_refused(laptop, bound, session_id):
    answer = laptop.refresh(session_id)
    assert answer.status_code in (400, 401)
    assert "Secure-Session-Challenge" not in answer.headers


def test_another_sessions_cookie_is_refused(app, laptop, key, bound, clock):
    # The phone's own key answers for the phone's session, with the laptop's cookies.
    phone, phone_key = Browser(app), DeviceKey()
    phone.sign_in()
    assert bind(phone, phone_key).status_code == 200
    phone_session = phone.session_id()
    clock.advance(ACCESS_TTL + 60)
    answer = laptop.refresh(
        phone_session, phone_key.answer(refresh_challenge(laptop.refresh(phone_session), phone_session))
    )
    assert answer.status_code == 403
    assert answer.json["error"] == "session_mismatch"


def test_an_ended_session_is_not_refreshed(app, laptop, key, bound, clock):
    phone = Browser(app)
    phone.sign_in()
    token = csrf_token_from(phone.get("/account/sessions").data)
    assert phone.post(f"/account/sessions/{bound}/revoke", data={"csrf_token": token}).status_code == 302
    assert laptop.refresh(bound).status_code == 401


# --- the binding holds -------------------------------------------------------------------------


def test_a_copied_cookie_jar_stops_working_when_its_access_cookie_expires(app, laptop, key, bound, clock):
    thief = Browser(app, user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0")
    thief.client.environ_base.update(REMOTE_ADDR="203.0.113.66")
    laptop.copy_cookies_to(thief)
    # Until the copied access cookie expires, it works: that is the window DBSC leaves.
    assert thief.get("/account").status_code == 200

    clock.advance(ACCESS_TTL + 60)
    refused = thief.get("/account")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/auth/login")
    # Refused again and again; the cookies are left (clearing a copy gains nothing).
    assert thief.get("/account/sessions").status_code == 302
    assert thief.post("/auth/refresh", headers={"X-CSRFToken": "x"}).status_code in (400, 401)
    api = app.test_client().post("/api/auth/refresh", json={"refresh_token": laptop.cookie("refresh_token")})
    assert api.status_code == 401

    # One alert, naming the laptop; the laptop's session goes on with its key.
    [alert] = copy_alerts(app)
    assert alert.session_public_id == bound
    assert alert.detail == "used from 203.0.113.66"
    assert refresh_with(laptop, key, bound).status_code == 200
    page = laptop.get("/account/sessions")
    soup = BeautifulSoup(page.data, "html.parser")
    copy_alert = soup.select_one("[data-testid=copy-alert]")
    assert "Chrome 131 on Windows" in copy_alert.get_text()
    assert soup.select_one("[data-current=true]")["data-device-bound"] == "true"


def test_a_request_sent_just_before_the_renewal_is_served(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 3)
    assert laptop.get("/account").status_code == 200
    assert copy_alerts(app) == []


def test_script_requests_outside_the_bound_paths_are_refused_without_alarm(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    refresh_cookie = laptop.cookie("refresh_token")
    answer = laptop.get("/api/me")
    assert answer.status_code == 401
    # Left alone: the page's script renews through /auth/refresh, which the browser
    # holds back until it has renewed the bound cookie.
    assert laptop.cookie("refresh_token") == refresh_cookie
    assert copy_alerts(app) == []
    assert refresh_with(laptop, key, bound).status_code == 200
    assert laptop.get("/api/me").status_code == 200


def test_a_page_scripts_explicit_refresh_of_a_renewed_bound_session_is_no_alarm(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    assert laptop.get("/api/me").status_code == 401  # session-fetch.js then calls /auth/refresh ...
    assert refresh_with(laptop, key, bound).status_code == 200  # ... which the browser holds back for this
    token = csrf_token_from(laptop.get("/account").data)
    assert laptop.post("/auth/refresh", headers={"X-CSRFToken": token}).status_code == 204
    assert laptop.get("/api/me").status_code == 200
    assert copy_alerts(app) == []


def test_a_thief_trying_again_and_again_raises_one_alert_an_hour(app, laptop, bound, clock):
    thief = Browser(app)
    clock.advance(ACCESS_TTL + 60)
    for _ in range(3):
        laptop.copy_cookies_to(thief)
        thief.get("/account")
    assert len(copy_alerts(app)) == 1


def test_revocation_and_password_change_apply_to_bound_sessions(app, laptop, key, bound):
    token = csrf_token_from(laptop.get("/account/password").data)
    changed = laptop.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a new password entirely",
            "confirm": "a new password entirely",
            "csrf_token": token,
        },
    )
    assert changed.status_code == 302
    # The bound session ended; this browser goes on in a new, unbound one, offered again.
    assert laptop.refresh(bound).status_code == 401
    assert laptop.session_id() != bound
    registration_challenge(changed)


def test_a_refresh_racing_a_page_load_serves_both(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL - 30)  # the page's access cookie is still good
    challenge = refresh_challenge(laptop.refresh(bound), bound)
    page_load = Browser(app)
    laptop.copy_cookies_to(page_load)
    barrier = threading.Barrier(2)

    def refresh():
        barrier.wait()
        return laptop.refresh(bound, key.answer(challenge)).status_code

    def load_page():
        barrier.wait()
        return page_load.get("/account").status_code

    with ThreadPoolExecutor(2) as pool:
        refreshed, loaded = pool.submit(refresh), pool.submit(load_page)
        assert (refreshed.result(), loaded.result()) == (200, 200)
    assert copy_alerts(app) == []
    assert session_row(app, bound).revoked_at is None


def test_two_refreshes_racing_on_one_challenge_rotate_once(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    challenge = refresh_challenge(laptop.refresh(bound), bound)
    twin = Browser(app)
    laptop.copy_cookies_to(twin)
    counter = session_row(app, bound).counter
    barrier = threading.Barrier(2)

    def answer(browser):
        barrier.wait()
        return browser.refresh(bound, key.answer(challenge)).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(answer, (laptop, twin)))
    assert statuses == [200, 403]
    assert session_row(app, bound).counter == counter + 1
    assert session_row(app, bound).revoked_at is None


# --- what an adversarial review found ------------------------------------------------------------


def test_a_copy_of_the_cookies_cannot_bind_the_session_once_the_sign_in_is_minutes_old(app, clock):
    firefox = Browser(app, user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0")
    assert firefox.register_account().status_code == 302
    clock.advance(6 * 60)  # the access token (15 minutes) has not rotated yet
    thief = Browser(app)
    firefox.copy_cookies_to(thief)
    # Even with a live challenge for the session (pages offer none; say it was copied
    # too), binding is refused this long after the sign-in.
    with app.app_context():
        challenge = make_challenge(
            ChallengePurpose.REGISTER,
            firefox.session_id(),
            state=UNBOUND,
            keys=app.extensions["dbsc_keys"],
            now=app.config["CLOCK"](),
        )
    proof = DeviceKey().registration(challenge)
    answer = thief.post("/auth/dbsc/register", headers={"Secure-Session-Response": proof})
    assert answer.status_code == 403
    assert answer.json["error"] == "not_bindable"
    assert session_row(app, firefox.session_id()).device_key is None


def test_a_rotation_offers_nothing(app, laptop, clock):
    clock.advance(ACCESS_TTL + 1)
    rotated = laptop.get("/account")
    assert rotated.status_code == 200
    assert "Secure-Session-Registration" not in rotated.headers


@pytest.mark.parametrize(
    "jwk_change",
    [
        pytest.param({"d": "AQAB"}, id="private-member"),
        pytest.param({"e": "Aw"}, id="exponent-3"),
        pytest.param({"n": "A" * 2000}, id="modulus-too-long"),
    ],
)
def test_an_rsa_key_that_would_cost_work_or_is_private_is_refused_before_any_arithmetic(app, laptop, jwk_change):
    key = DeviceKey("RS256")
    key.jwk = {**key.jwk, **jwk_change}
    challenge = registration_challenge(laptop.signed_in_by)
    answer = laptop.post("/auth/dbsc/register", headers={"Secure-Session-Response": key.registration(challenge)})
    assert answer.status_code == 400
    assert session_row(app, laptop.session_id()).device_key is None


def test_a_slow_request_of_the_device_is_refused_quietly_and_the_device_stays_signed_in(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 30)  # beyond the in-flight leeway, a minute from an alarm
    refused = laptop.get("/account")
    assert refused.status_code == 302
    assert copy_alerts(app) == []
    # Its cookies were left: its next renewal with the key works.
    assert refresh_with(laptop, key, bound).status_code == 200
    assert laptop.get("/account").status_code == 200


@pytest.mark.parametrize("app_config", [{"ACCESS_TOKEN_TTL": 60}])
def test_registering_just_as_the_access_cookie_expires_keeps_the_rotation(app, clock):
    laptop, key = Browser(app), DeviceKey()
    assert laptop.register_account().status_code == 302
    offer = laptop.signed_in_by
    refresh_before = laptop.cookie("refresh_token")
    clock.advance(61)
    # The hook rotates this very request; registration keeps both of its new cookies.
    assert bind(laptop, key, offer=offer).status_code == 200
    assert laptop.cookie("refresh_token") != refresh_before
    session_id = laptop.session_id()
    clock.advance(61)
    assert refresh_with(laptop, key, session_id).status_code == 200
    assert session_row(app, session_id).revoked_at is None


def test_a_proof_answered_with_a_lost_rotation_sent_again_is_not_accepted_twice(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    lost_cookies = Browser(app)
    laptop.copy_cookies_to(lost_cookies)
    assert refresh_with(laptop, key, bound).status_code == 200  # its answer never arrives
    clock.advance(60)  # past the grace window
    proof = key.answer(refresh_challenge(lost_cookies.refresh(bound), bound))
    assert lost_cookies.refresh(bound, proof).status_code == 200  # the rotation, sent again
    counter = session_row(app, bound).counter
    refresh_challenge(lost_cookies.refresh(bound, proof), bound)  # the same proof: a new challenge
    assert session_row(app, bound).counter == counter


def test_a_browser_that_could_not_renew_says_so_and_raises_no_alarm(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 120)
    # Out of signing quota (or unable to reach us), Chromium lets the held-back request go
    # without the expired cookie, and says why.
    laptop.client.delete_cookie("access_token", domain="localhost")
    skipped = {"Secure-Session-Skipped": f'quota_exceeded;session_identifier="{bound}"'}
    assert laptop.get("/account", headers=skipped).status_code == 302
    assert copy_alerts(app) == []
    # Another session's name in the header spares nothing.
    assert laptop.get("/account", headers={"Secure-Session-Skipped": 'quota_exceeded;session_identifier="x"'})
    assert len(copy_alerts(app)) == 1
    assert refresh_with(laptop, key, bound).status_code == 200


def test_a_renewal_racing_the_page_that_delivers_the_last_one_needs_one_signature(app, laptop, key, bound, clock):
    clock.advance(ACCESS_TTL + 60)
    assert refresh_with(laptop, key, bound).status_code == 200
    clock.advance(ACCESS_TTL - 10)  # Chrome renews ahead of the expiry ...
    challenge = refresh_challenge(laptop.refresh(bound), bound)
    # ... while a page carries the last renewal's access token for the first time.
    assert laptop.get("/account").status_code == 200
    assert laptop.refresh(bound, key.answer(challenge)).status_code == 200
