"""Access JWTs and refresh tokens as plain functions: no app, no database, no clock.

One test per way a token can fail, as Fernet's tests do. A caller sees two outcomes:
`AccessTokenExpired` (a genuine token past its `exp`: try the refresh token) and a plain
`InvalidToken` (not ours, or malformed: the request is signed out). Since the first is a
subclass of the second, refusals are checked by exact type.

Forged tokens are built by hand (`sign`), each one change away from a token that
`test_hand_signed_token_verifies` shows is accepted, so a refusal is due to that change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone

import jwt
import pytest

from webapp import tokens
from webapp.tokens import KeyRing

SECRET = "unit-test-secret-current-0123456789abcdef0123456789"
OLD_SECRET = "unit-test-secret-previous-0123456789abcdef012345678"
OTHER_SECRET = "unit-test-secret-another-app-0123456789abcdef012345"
KEYS = KeyRing.from_secrets(SECRET)
OTHER_KEYS = KeyRing.from_secrets(OTHER_SECRET)

ISSUER = "https://webapp.test"
AUDIENCE = "webapp-browser"
NOW = int(datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc).timestamp())
LIFETIME = 900
USER_ID = 42
SESSION_ID = "Zm9vYmFyYmF6cXV4LXF1dX"  # 22 characters, like secrets.token_urlsafe(16)
COUNTER = 3  # the rotation counter the access token was issued with
DROP = object()  # a claim or header value meaning "leave this one out"

URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes) -> dict:
    """The claims of a genuine access token for USER_ID, valid at NOW, with `changes`."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(USER_ID),
        "sid": SESSION_ID,
        "ctr": COUNTER,
        "iat": NOW,
        "exp": NOW + LIFETIME,
        "jti": "hand-made-jti",
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not DROP}


def sign(payload, *, header: dict | None = None, key: bytes = KEYS.signing_key, digest=hashlib.sha256) -> str:
    """A compact JWS made by hand, so that any header and any claim value can be forged."""
    header = {"alg": "HS256", "typ": "JWT", "kid": KEYS.signing_kid, **(header or {})}
    header = {name: value for name, value in header.items() if value is not DROP}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), digest).digest())


def mint(keys: KeyRing = KEYS, *, issued_at: int = NOW, expires_at: int = NOW + LIFETIME) -> str:
    return tokens.encode_access_token(
        user_id=USER_ID,
        session_id=SESSION_ID,
        counter=COUNTER,
        issued_at=issued_at,
        expires_at=expires_at,
        keys=keys,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


def decode(token, *, keys: KeyRing = KEYS, now: int = NOW, issuer: str = ISSUER, audience: str = AUDIENCE):
    return tokens.decode_access_token(token, keys=keys, now=now, issuer=issuer, audience=audience)


def assert_signed_out(token, **kwargs) -> None:
    """`token` is refused as not ours: a plain InvalidToken, never AccessTokenExpired
    (which would send the caller to rotation)."""
    with pytest.raises(tokens.InvalidToken) as excinfo:
        decode(token, **kwargs)
    assert type(excinfo.value) is tokens.InvalidToken


def assert_expired(token, **kwargs) -> None:
    with pytest.raises(tokens.AccessTokenExpired):
        decode(token, **kwargs)


def padded_token(length: int) -> str:
    """A genuine, correctly signed token of exactly `length` characters."""
    for header_padding in range(4):
        for claim_padding in range(length):
            token = sign(claims(pad="x" * claim_padding), header={"pad": "y" * header_padding})
            if len(token) >= length:
                break
        if len(token) == length:
            return token
    raise AssertionError(f"no token of length {length}")


# Access tokens: genuine ones


def test_round_trip():
    verified = decode(mint(), now=NOW)

    assert (verified.user_id, verified.session_id, verified.counter) == (USER_ID, SESSION_ID, COUNTER)
    assert (verified.issued_at, verified.expires_at) == (NOW, NOW + LIFETIME)
    assert isinstance(verified.token_id, str) and verified.token_id


def test_each_token_has_its_own_id():
    assert decode(mint()).token_id != decode(mint()).token_id


def test_header_names_the_algorithm_and_signing_key():
    header = jwt.get_unverified_header(mint())

    assert (header["alg"], header["kid"]) == ("HS256", KEYS.signing_kid)


def test_hand_signed_token_verifies():
    """The baseline every forged token below differs from in one respect."""
    assert decode(sign(claims())) == tokens.AccessClaims(
        user_id=USER_ID,
        session_id=SESSION_ID,
        counter=COUNTER,
        issued_at=NOW,
        expires_at=NOW + LIFETIME,
        token_id="hand-made-jti",
    )


# Time


def test_expired_at_exp():
    assert_expired(mint(expires_at=NOW), now=NOW)


def test_valid_one_second_before_exp():
    assert decode(mint(expires_at=NOW + 1), now=NOW).expires_at == NOW + 1


def test_issued_in_the_future():
    assert_signed_out(mint(issued_at=NOW + 61), now=NOW)


def test_issued_up_to_60_seconds_ahead_is_accepted():
    # Clock skew between the worker that issued the token and the one checking it.
    assert decode(mint(issued_at=NOW + 60), now=NOW).issued_at == NOW + 60


def test_expired_forgery_is_signed_out_not_expired():
    # Only a genuine token may send the caller to rotation.
    assert_signed_out(mint(OTHER_KEYS, issued_at=NOW - 2 * LIFETIME, expires_at=NOW - LIFETIME), now=NOW)


# Header: algorithm and key


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_algorithm_none(alg):
    unsigned = sign(claims(), header={"alg": alg}).rsplit(".", 1)[0] + "."
    assert_signed_out(unsigned)


@pytest.mark.parametrize(
    ("alg", "digest"),
    [
        ("HS384", hashlib.sha384),  # genuinely signed with our key, under another algorithm
        ("HS512", hashlib.sha512),
        ("RS256", hashlib.sha256),  # an HS256 signature under an RSA header: algorithm confusion
        ("ES256", hashlib.sha256),
    ],
    ids=["HS384", "HS512", "RS256", "ES256"],
)
def test_another_algorithm(alg, digest):
    assert_signed_out(sign(claims(), header={"alg": alg}, digest=digest))


def test_algorithm_missing():
    assert_signed_out(sign(claims(), header={"alg": DROP}))


def test_unknown_kid():
    assert_signed_out(sign(claims(), header={"kid": "0123456789abcdef"}))


def test_kid_missing():
    assert_signed_out(sign(claims(), header={"kid": DROP}))


@pytest.mark.parametrize("kid", [None, 123, [KEYS.signing_kid], {"kid": KEYS.signing_kid}], ids=repr)
def test_kid_not_a_string(kid):
    assert_signed_out(sign(claims(), header={"kid": kid}))


def test_critical_header_extension():
    assert_signed_out(sign(claims(), header={"crit": ["exp"]}))


def test_signed_by_another_secret():
    assert_signed_out(mint(OTHER_KEYS))


def test_signed_by_another_key_under_our_kid():
    assert_signed_out(sign(claims(), key=OTHER_KEYS.signing_key))


def test_signed_with_the_secret_itself():
    # The signing key is derived from SECRET_KEY; the secret itself signs nothing.
    assert_signed_out(sign(claims(), key=SECRET.encode()))


def test_signed_with_the_refresh_mac_key():
    assert KEYS.refresh_mac_keys[0] != KEYS.signing_key
    assert_signed_out(sign(claims(), key=KEYS.refresh_mac_keys[0]))


def test_payload_swapped_under_a_genuine_signature():
    header, _, signature = mint().split(".")
    other_user = b64(json.dumps(claims(sub="1")).encode())

    assert_signed_out(f"{header}.{other_user}.{signature}")


# Claims


@pytest.mark.parametrize(
    "iss",
    ["https://evil.test", "https://webapp.tes", "webapp.test", "https://webapp.test/", "", [ISSUER], 1],
    ids=repr,
)
def test_wrong_issuer(iss):
    assert_signed_out(sign(claims(iss=iss)))


@pytest.mark.parametrize(
    "aud",
    ["webapp-api", "webapp-browse", "webapp", "", ["webapp-api"], [], 1, {AUDIENCE: True}],
    ids=repr,
)
def test_wrong_audience(aud):
    assert_signed_out(sign(claims(aud=aud)))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "sid", "ctr", "iat", "exp", "jti"])
def test_claim_missing(claim):
    assert_signed_out(sign(claims(**{claim: DROP})))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "sid", "ctr", "iat", "exp", "jti"])
def test_claim_null(claim):
    assert_signed_out(sign(claims(**{claim: None})))


@pytest.mark.parametrize(
    "sub",
    ["alice", "", "-1", "+1", "1.0", "1e3", " 1", "1\n", "0x1", "\u0661\u0662", "\u00b2"],
    ids=repr,
)
def test_subject_not_numeric(sub):
    assert_signed_out(sign(claims(sub=sub)))


def test_subject_of_18_digits_is_accepted():
    assert decode(sign(claims(sub="9" * 18))).user_id == 999_999_999_999_999_999


def test_subject_too_long():
    assert_signed_out(sign(claims(sub="1" + "0" * 18)))


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iat", float(NOW)),
        ("iat", NOW + 0.5),
        ("iat", str(NOW)),
        ("iat", True),
        ("exp", str(NOW + LIFETIME)),
        ("exp", float(NOW + LIFETIME)),
        ("exp", [NOW + LIFETIME]),
        ("sid", 12345),
        ("sid", [SESSION_ID]),
        ("sub", USER_ID),
        ("jti", 7),
        ("ctr", str(COUNTER)),
        ("ctr", float(COUNTER)),
        ("ctr", True),
        ("ctr", -1),
        ("ctr", 10**10),
    ],
    ids=repr,
)
def test_claim_mistyped(claim, value):
    assert_signed_out(sign(claims(**{claim: value})))


# The token as a whole


def test_token_of_max_length_is_accepted():
    token = padded_token(tokens.MAX_TOKEN_LENGTH)

    assert decode(token).user_id == USER_ID


def test_token_too_long():
    assert_signed_out(padded_token(tokens.MAX_TOKEN_LENGTH + 1))


@pytest.mark.parametrize("token", [mint().encode(), None, 42], ids=["bytes", "None", "int"])
def test_token_not_a_string(token):
    assert_signed_out(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c",
        mint() + ".extra",
        f"{b64(b'[]')}.{b64(b'{}')}.",  # a header that is not a JSON object
        sign(["a", "payload", "that", "is", "not", "an", "object"]),
        "\u00e9.\u00e9.\u00e9",
    ],
    ids=[
        "empty",
        "one segment",
        "two segments",
        "not base64url JSON",
        "four segments",
        "header not an object",
        "payload not an object",
        "non-ASCII",
    ],
)
def test_malformed(token):
    assert_signed_out(token)


# Secret rotation: SECRET_KEY_FALLBACKS still verify, only the current secret signs


def test_signed_with_fallback_secret_verifies():
    token = mint(KeyRing.from_secrets(OLD_SECRET))

    assert decode(token, keys=KeyRing.from_secrets(SECRET, [OLD_SECRET])).user_id == USER_ID


def test_new_tokens_are_signed_with_the_current_secret():
    token = mint(KeyRing.from_secrets(SECRET, [OLD_SECRET]))

    assert jwt.get_unverified_header(token)["kid"] == KeyRing.from_secrets(SECRET).signing_kid
    assert decode(token, keys=KeyRing.from_secrets(SECRET)).user_id == USER_ID
    assert_signed_out(token, keys=KeyRing.from_secrets(OLD_SECRET))


def test_signed_with_a_dropped_fallback_secret():
    token = mint(KeyRing.from_secrets(OLD_SECRET))

    assert_signed_out(token, keys=KeyRing.from_secrets(SECRET, [OTHER_SECRET]))


# The verification cache: answers for genuine tokens are remembered; time is not


@pytest.fixture
def parsed(monkeypatch) -> list[str]:
    """Every token PyJWT verifies during the test: one answered from the cache is not."""
    calls = []
    pyjwt_decode = jwt.decode

    def recording_decode(token, *args, **kwargs):
        calls.append(token)
        return pyjwt_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", recording_decode)
    return calls


def test_cached_token_is_refused_once_expired(parsed):
    keys = KeyRing.from_secrets(SECRET)  # a key ring of its own: nothing is cached for it yet
    token = mint(keys, expires_at=NOW + 10)

    assert decode(token, keys=keys, now=NOW).expires_at == NOW + 10
    assert decode(token, keys=keys, now=NOW + 9).expires_at == NOW + 10
    assert_expired(token, keys=keys, now=NOW + 10)
    assert parsed.count(token) == 1  # all three answers came from one verification


def test_cached_token_is_refused_when_checked_before_it_was_issued(parsed):
    keys = KeyRing.from_secrets(SECRET)
    token = mint(keys)

    assert decode(token, keys=keys, now=NOW).issued_at == NOW
    assert_signed_out(token, keys=keys, now=NOW - 61)
    assert parsed.count(token) == 1


@pytest.mark.parametrize(
    "token",
    [sign(claims(), key=OTHER_KEYS.signing_key), sign(claims(iat=float(NOW)))],
    ids=["bad signature", "mistyped claim"],
)
def test_failures_are_not_cached(parsed, token):
    keys = KeyRing.from_secrets(SECRET)

    assert_signed_out(token, keys=keys)
    assert_signed_out(token, keys=keys)
    assert parsed.count(token) == 2


def test_cached_answer_is_per_key_ring():
    token = mint(KeyRing.from_secrets(OLD_SECRET))
    assert decode(token, keys=KeyRing.from_secrets(SECRET, [OLD_SECRET])).user_id == USER_ID

    assert_signed_out(token, keys=KeyRing.from_secrets(SECRET))


def test_cached_answer_is_per_audience():
    token = mint()
    assert decode(token).user_id == USER_ID

    assert_signed_out(token, audience="webapp-api")


# Refresh tokens


def refresh_mac(key: bytes, session_id: str, counter_text: str) -> str:
    return b64(hmac.new(key, f"{session_id}.{counter_text}".encode(), hashlib.sha256).digest())


def assert_refresh_refused(token, keys: KeyRing = KEYS) -> None:
    with pytest.raises(tokens.InvalidToken) as excinfo:
        tokens.parse_refresh_token(token, keys=keys)
    assert type(excinfo.value) is tokens.InvalidToken


@pytest.mark.parametrize("counter", [0, 1, 7, 9_999_999_999])
def test_refresh_round_trip(counter):
    token = tokens.mint_refresh_token(SESSION_ID, counter, keys=KEYS)

    assert token.startswith(f"{SESSION_ID}.{counter}.")
    assert tokens.parse_refresh_token(token, keys=KEYS) == (SESSION_ID, counter)


def test_refresh_token_is_a_pure_function_of_session_counter_and_key():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS)

    assert tokens.mint_refresh_token(SESSION_ID, 7, keys=KeyRing.from_secrets(SECRET)) == token
    assert tokens.mint_refresh_token(SESSION_ID, 8, keys=KEYS) != token
    assert tokens.mint_refresh_token("A" * 22, 7, keys=KEYS) != token
    assert tokens.mint_refresh_token(SESSION_ID, 7, keys=OTHER_KEYS) != token


def test_refresh_bad_mac():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS)
    session_and_counter, mac = token.rsplit(".", 1)
    flipped = ("B" if mac[0] == "A" else "A") + mac[1:]

    assert_refresh_refused(f"{session_and_counter}.{flipped}")


def test_refresh_mac_not_canonical_base64():
    # 32 bytes take 43 base64 characters and leave the last one's 2 low bits unused:
    # flipping one decodes to the same MAC, but is not the token we issued.
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS)
    session_and_counter, mac = token.rsplit(".", 1)
    variant = mac[:-1] + URLSAFE_ALPHABET[URLSAFE_ALPHABET.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(variant + "=") == base64.urlsafe_b64decode(mac + "=")

    assert_refresh_refused(f"{session_and_counter}.{variant}")


def test_refresh_mac_from_another_key():
    assert_refresh_refused(tokens.mint_refresh_token(SESSION_ID, 7, keys=OTHER_KEYS))


def test_refresh_mac_made_with_the_access_signing_key():
    assert_refresh_refused(f"{SESSION_ID}.7.{refresh_mac(KEYS.signing_key, SESSION_ID, '7')}")


def test_refresh_mac_of_another_counter():
    mac = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS).rsplit(".", 1)[1]

    assert_refresh_refused(f"{SESSION_ID}.8.{mac}")


def test_refresh_mac_of_another_session():
    mac = tokens.mint_refresh_token("A" * 22, 7, keys=KEYS).rsplit(".", 1)[1]

    assert_refresh_refused(f"{SESSION_ID}.7.{mac}")


@pytest.mark.parametrize("counter_text", ["01", "007", "00"])
def test_refresh_counter_with_leading_zero(counter_text):
    # The MAC is over the integer, so "01" carries the valid MAC of counter 1: only the
    # format check stops a second spelling of the same token.
    mac = refresh_mac(KEYS.refresh_mac_keys[0], SESSION_ID, str(int(counter_text)))

    assert_refresh_refused(f"{SESSION_ID}.{counter_text}.{mac}")


def test_refresh_counter_negative():
    assert_refresh_refused(tokens.mint_refresh_token(SESSION_ID, -1, keys=KEYS))


def test_refresh_counter_of_more_than_ten_digits():
    assert_refresh_refused(tokens.mint_refresh_token(SESSION_ID, 10_000_000_000, keys=KEYS))


@pytest.mark.parametrize("counter_text", ["\u0661", "1\u0661", "\uff11", "+1", " 1"], ids=repr)
def test_refresh_counter_not_ascii_digits(counter_text):
    # Each carries the valid MAC of the number int() reads from it.
    mac = refresh_mac(KEYS.refresh_mac_keys[0], SESSION_ID, str(int(counter_text)))

    assert_refresh_refused(f"{SESSION_ID}.{counter_text}.{mac}")


@pytest.mark.parametrize("length", [0, 21, 23, 43])
def test_refresh_session_id_of_wrong_length(length):
    assert_refresh_refused(tokens.mint_refresh_token("A" * length, 7, keys=KEYS))


@pytest.mark.parametrize("session_id", ["A" * 21 + "+", "A" * 21 + "/", "A" * 21 + "=", "A" * 21 + "\u00e9"], ids=repr)
def test_refresh_session_id_outside_the_url_safe_alphabet(session_id):
    assert_refresh_refused(tokens.mint_refresh_token(session_id, 7, keys=KEYS))


@pytest.mark.parametrize("shape", ["extra segment", "missing counter", "trailing newline", "leading space"])
def test_refresh_wrong_shape(shape):
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS)
    session_id, counter, mac = token.split(".")
    malformed = {
        "extra segment": f"{token}.7",
        "missing counter": f"{session_id}.{mac}",
        "trailing newline": f"{token}\n",
        "leading space": f" {token}",
    }[shape]

    assert_refresh_refused(malformed)


@pytest.mark.parametrize(
    "token",
    [tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS).encode(), None, 7],
    ids=["bytes", "None", "int"],
)
def test_refresh_not_a_string(token):
    assert_refresh_refused(token)


def test_refresh_too_long():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KEYS)

    assert_refresh_refused(token + "A" * (tokens.MAX_TOKEN_LENGTH + 1 - len(token)))


def test_refresh_minted_under_a_fallback_secret_parses():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KeyRing.from_secrets(OLD_SECRET))

    assert tokens.parse_refresh_token(token, keys=KeyRing.from_secrets(SECRET, [OLD_SECRET])) == (SESSION_ID, 7)


def test_refresh_new_tokens_are_minted_with_the_current_secret():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KeyRing.from_secrets(SECRET, [OLD_SECRET]))

    assert token == tokens.mint_refresh_token(SESSION_ID, 7, keys=KeyRing.from_secrets(SECRET))
    assert_refresh_refused(token, keys=KeyRing.from_secrets(OLD_SECRET))


def test_refresh_minted_under_a_dropped_fallback_secret():
    token = tokens.mint_refresh_token(SESSION_ID, 7, keys=KeyRing.from_secrets(OLD_SECRET))

    assert_refresh_refused(token, keys=KeyRing.from_secrets(SECRET, [OTHER_SECRET]))
