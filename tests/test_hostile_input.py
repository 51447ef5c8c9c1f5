"""Hostile input, generated: cookies, JWT headers and claims, form fields and paths.

Three properties hold for everything hypothesis makes up:
- never a 500 (nor any 5xx): bad input is a signed-out request or a 4xx;
- never signed in unless the token is one the app issued and is still valid (for JWTs an
  oracle says exactly which crafted tokens a correct verifier accepts);
- nothing in the database changes for a rejected request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from webapp import accounts, sessions, tokens
from webapp.extensions import db
from webapp.models import SecurityEvent, Session, User

from .conftest import PASSWORD, csrf_token_from

EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    # One app per test, shared by its examples: each example leaves the database as it
    # found it (that is the property), so sharing is sound.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SIGNED_IN_PROBE = "/api/me"


@pytest.fixture
def app_config():
    # Failed sign-ins count toward limits whose breach records a security event; the
    # limits are not under test here.
    return {
        "LOGIN_LIMIT_PER_ACCOUNT": "100000 per minute",
        "LOGIN_LIMIT_PER_IP": "100000 per minute",
        "SIGN_IN_ATTEMPTS_PER_IP": "100000 per minute",
        "NEW_SESSIONS_PER_USER_PER_HOUR": 100000,
    }


@pytest.fixture
def world(app, clock):
    """Alice with one live session and one revoked session; their tokens."""
    with app.app_context():
        policy = app.extensions["session_policy"]
        alice = accounts.create_user(db.session, "alice@example.com", PASSWORD, rounds=4, now=clock())
        live = sessions.start_session(db.session, alice, policy=policy, now=clock())
        dead = sessions.start_session(db.session, alice, policy=policy, now=clock())
        sessions.revoke_session(db.session, dead.session_id, user_id=alice.id, now=clock())
        db.session.commit()
        user_id = alice.id
        db.session.remove()
    return {"app": app, "policy": policy, "live": live, "dead": dead, "user_id": user_id, "clock": clock}


def snapshot(app) -> dict:
    with app.app_context():
        tables = {
            model.__tablename__: [
                tuple(row) for row in db.session.execute(select(*model.__table__.columns).order_by(model.id))
            ]
            for model in (User, Session, SecurityEvent)
        }
        db.session.remove()
    return tables


def signed_in(client, **request) -> bool:
    response = client.get(SIGNED_IN_PROBE, **request)
    assert response.status_code in (200, 401), response.status_code
    return response.status_code == 200


def assert_no_server_error(response):
    assert response.status_code < 500, (response.status_code, response.data[:500])


# --- cookies ----------------------------------------------------------------------------------

# What a server hands the app: any bytes but CR and LF, read as latin-1 (PEP 3333).
header_bytes = st.binary(max_size=300).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1"))
cookie_text = st.one_of(
    header_bytes,
    st.text(max_size=200).map(lambda text: text.encode("utf-8").decode("latin-1").replace("\r", "").replace("\n", "")),
    st.sampled_from(["", '""', "\x00", "a" * 5000, "x" * 100_000, "%00", "null", "[]", "{}", "1e999"]),
)
COOKIE_NAMES = ["access_token", "refresh_token", "session", "__Host-access_token", "__Host-refresh_token", "junk"]


@EXAMPLES
@given(
    cookies=st.lists(
        st.tuples(
            st.sampled_from(COOKIE_NAMES),
            st.one_of(cookie_text, st.sampled_from(["LIVE_ACCESS", "DEAD_ACCESS", "DEAD_REFRESH"])),
        ),
        max_size=6,
    ),
    path=st.sampled_from(["/", "/account", "/account/sessions", "/api/me", "/auth/login", "/healthz"]),
)
def test_hostile_cookies(world, cookies, path):
    app = world["app"]
    # Genuine tokens mixed in: the live access token, and both tokens of a revoked session.
    genuine = {
        "LIVE_ACCESS": world["live"].access_token,
        "DEAD_ACCESS": world["dead"].access_token,
        "DEAD_REFRESH": world["dead"].refresh_token,
    }
    pairs = [(name, genuine.get(value, value)) for name, value in cookies]
    header = "; ".join(f"{name}={value}" for name, value in pairs)
    before = snapshot(app)
    # No cookie jar: with one, the test client would replace our Cookie header by its own.
    client = app.test_client(use_cookies=False)

    response = client.get(path, headers={"Cookie": header})
    assert_no_server_error(response)
    now_signed_in = signed_in(client, headers={"Cookie": header})

    event("signed in" if now_signed_in else "signed out")
    # The only credential here that may sign anybody in is the live access token.
    if now_signed_in:
        assert ("access_token", world["live"].access_token) in pairs
    assert snapshot(app) == before


# --- JWTs -------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
ANYTHING = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


def audience_accepts(aud, audience: str) -> bool:
    """RFC 7519: `aud` is one string or an array of strings that must contain ours."""
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and all(isinstance(item, str) for item in aud) and audience in aud


@st.composite
def crafted_jwts(draw, world):
    policy = world["policy"]
    now = int(world["clock"]().timestamp())
    good = {
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": str(world["user_id"]),
        "sid": world["live"].session_id,
        "ctr": 0,
        "iat": now,
        "exp": now + 300,
        "jti": "jti-1",
    }
    variants = {
        "iss": st.sampled_from([policy.issuer, "someone-else", ""]) | ANYTHING,
        "aud": st.sampled_from([policy.audience, "other-audience", [policy.audience]]) | ANYTHING,
        "sub": st.sampled_from([str(world["user_id"]), str(world["user_id"] + 1), world["user_id"], "0" * 40, "١"])
        | ANYTHING,
        "sid": st.sampled_from([world["live"].session_id, world["dead"].session_id, "x" * 5000]) | ANYTHING,
        "ctr": st.sampled_from([0, 1, -1, "0", True, 10**10]) | ANYTHING,
        "iat": st.sampled_from([now, now + 3600, True, float(now)]) | ANYTHING,
        "exp": st.sampled_from([now + 300, now - 1, 10**30, str(now + 300), True]) | ANYTHING,
        "jti": st.sampled_from(["jti-2"]) | ANYTHING,
    }
    claims = dict(good)
    for name in draw(st.sets(st.sampled_from(sorted(good)))):
        if draw(st.booleans()):
            claims[name] = draw(variants[name])
        else:
            del claims[name]
    header = {
        "alg": draw(
            st.sampled_from(["HS256", "none", "None", "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", ""])
            | ANYTHING
        )
    }
    kid = draw(st.sampled_from(["current", "unknown", "missing", "int", "list", "other"]))
    header.update(
        {
            "current": {"kid": policy.keys.signing_kid},
            "unknown": {"kid": "0" * 16},
            "missing": {},
            "int": {"kid": 7},
            "list": {"kid": [policy.keys.signing_kid]},
            "other": {"kid": draw(ANYTHING)},
        }[kid]
    )
    if draw(st.booleans()):
        header["typ"] = "JWT"
    signer = draw(
        st.sampled_from(["key-sha256", "key-sha384", "wrong-key", "empty", "garbage", "public-key-as-secret"])
    )
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    key = policy.keys.signing_key
    signature = {
        "key-sha256": lambda: hmac.new(key, signing_input.encode(), hashlib.sha256).digest(),
        "key-sha384": lambda: hmac.new(key, signing_input.encode(), hashlib.sha384).digest(),
        "wrong-key": lambda: hmac.new(b"not the key", signing_input.encode(), hashlib.sha256).digest(),
        "empty": lambda: b"",
        "garbage": lambda: draw(st.binary(max_size=80)),
        # HS/RS confusion: an "RS256" token whose HMAC secret is some public value.
        "public-key-as-secret": lambda: hmac.new(
            policy.keys.signing_kid.encode(), signing_input.encode(), hashlib.sha256
        ).digest(),
    }[signer]()
    token = f"{signing_input}.{b64(signature)}"

    accepted = (
        header == {"alg": "HS256", "kid": policy.keys.signing_kid, **({"typ": "JWT"} if "typ" in header else {})}
        and signer == "key-sha256"
        and claims.get("iss") == policy.issuer
        and audience_accepts(claims.get("aud"), policy.audience)
        and claims.get("sub") == str(world["user_id"])
        and claims.get("sid") == world["live"].session_id
        and type(claims.get("iat")) is int
        and claims["iat"] <= now + 60
        and type(claims.get("exp")) is int
        and claims["exp"] > now
        and isinstance(claims.get("jti"), str)
        and type(claims.get("ctr")) is int
        and 0 <= claims["ctr"] <= tokens.MAX_COUNTER
    )
    return token, accepted


@EXAMPLES
@given(data=st.data(), transport=st.sampled_from(["cookie", "bearer"]))
def test_crafted_access_tokens_sign_in_only_when_genuine(world, data, transport):
    token, accepted = data.draw(crafted_jwts(world))
    app = world["app"]
    before = snapshot(app)
    if transport == "cookie":
        request = {"headers": {"Cookie": f"access_token={token}"}}
    else:
        request = {"headers": {"Authorization": f"Bearer {token}"}}
    event("genuine" if accepted else "forged")
    assert signed_in(app.test_client(use_cookies=False), **request) is accepted
    assert snapshot(app) == before


# --- forms ------------------------------------------------------------------------------------

form_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", " ", "\x00", "alice@example.com", " ALICE@example.com ", PASSWORD, "a" * 2000, "a@b.c\x00"]),
)


@EXAMPLES
@given(
    endpoint=st.sampled_from(["/auth/login", "/auth/register"]),
    fields=st.dictionaries(
        st.sampled_from(["email", "password", "confirm", "remember", "csrf_token", "next", "email\x00"]),
        st.one_of(form_text, st.lists(form_text, max_size=3)),
        max_size=6,
    ),
    keep_csrf=st.booleans(),
    raw_body=st.none() | st.binary(max_size=300),
)
def test_hostile_forms(world, endpoint, fields, keep_csrf, raw_body):
    app = world["app"]
    client = app.test_client()
    token = csrf_token_from(client.get(endpoint).data)
    if keep_csrf:
        fields = {**fields, "csrf_token": token}
    before = snapshot(app)

    if raw_body is not None:
        response = client.post(endpoint, data=raw_body, content_type="application/x-www-form-urlencoded")
    else:
        response = client.post(endpoint, data=fields)
    assert_no_server_error(response)

    after = snapshot(app)
    if response.status_code == 302 and signed_in(client):
        # Accepted: a sign-in with Alice's own password, or a new account.
        assert len(after["sessions"]) == len(before["sessions"]) + 1
        if endpoint == "/auth/login":
            assert len(after["users"]) == len(before["users"])
        # Put the world back for the next example.
        with app.app_context():
            new_ids = {row[0] for row in after["sessions"]} - {row[0] for row in before["sessions"]}
            db.session.execute(Session.__table__.delete().where(Session.id.in_(new_ids)))
            db.session.execute(
                SecurityEvent.__table__.delete().where(
                    SecurityEvent.id > max(row[0] for row in before["security_events"])
                )
            )
            db.session.execute(User.__table__.delete().where(User.id > max(row[0] for row in before["users"])))
            db.session.commit()
            db.session.remove()
    else:
        assert not signed_in(client)
        assert after == before


# --- paths ------------------------------------------------------------------------------------

path_text = st.binary(max_size=120).map(lambda raw: raw.decode("latin-1"))


@EXAMPLES
@given(
    path=st.one_of(
        path_text.map(lambda text: "/" + text),
        st.sampled_from(["/account/sessions/", "/auth/", "/api/", "/static/", "/account/sessions/%00/revoke"]).flatmap(
            lambda prefix: path_text.map(lambda text: prefix + text)
        ),
    ),
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]),
    query=st.none() | path_text,
)
def test_hostile_paths(world, path, method, query):
    app = world["app"]
    before = snapshot(app)
    client = app.test_client()
    # Signed in, with a valid CSRF token: the path is the only hostile part.
    client.set_cookie("access_token", world["live"].access_token)
    token = csrf_token_from(client.get("/").data)
    environ = {"PATH_INFO": path, "QUERY_STRING": query or "", "REQUEST_METHOD": method}
    response = client.open(
        "/", method=method, data={"csrf_token": token} if method == "POST" else None, environ_overrides=environ
    )
    assert_no_server_error(response)
    assert snapshot(app) == before


# --- NUL bytes: PostgreSQL refuses them in text, so each reached a 500 there -----------------


@pytest.mark.parametrize(
    ("endpoint", "fields"),
    [
        ("/auth/login", {"email": "alice@example.com\x00", "password": PASSWORD}),
        ("/auth/register", {"email": "nul\x00@example.com", "password": PASSWORD, "confirm": PASSWORD}),
    ],
)
def test_a_nul_in_the_email_is_a_form_error(world, endpoint, fields):
    app = world["app"]
    client = app.test_client()
    before = snapshot(app)
    token = csrf_token_from(client.get(endpoint).data)
    response = client.post(endpoint, data={**fields, "csrf_token": token})
    assert response.status_code == 200
    assert snapshot(app) == before


def test_a_nul_in_the_user_agent_still_signs_in(world):
    client = world["app"].test_client()
    client.environ_base["HTTP_USER_AGENT"] = "Mozilla/5.0\x00 evil"
    token = csrf_token_from(client.get("/auth/login").data)
    response = client.post(
        "/auth/login", data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.parametrize("session_id", ["a\x00b", "\x00" * 22])
def test_a_nul_in_a_session_id_is_not_a_500(world, session_id):
    app = world["app"]
    before = snapshot(app)
    client = app.test_client()
    client.set_cookie("access_token", world["live"].access_token)
    token = csrf_token_from(client.get("/").data)
    response = client.post(
        "/", data={"csrf_token": token}, environ_overrides={"PATH_INFO": f"/account/sessions/{session_id}/revoke"}
    )
    assert response.status_code in (400, 404)
    assert snapshot(app) == before
