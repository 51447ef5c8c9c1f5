"""Device Bound Session Credentials (DBSC): the checks, in plain Python.

A Chrome browser that supports DBSC answers our offer (`Secure-Session-Registration`)
with a JWT signed by a key that never leaves the device, carrying the key itself (`jwk`)
and our challenge (`jti`). We keep the public key on the session. From then on the
session's access cookie is renewed only through the refresh endpoint, with a JWT over a
fresh challenge signed by that key: a copied cookie jar stops working when its access
cookie expires (sessions.rotate_refresh_token refuses the refresh cookie alone).

Challenges are stateless: the time they were issued and an HMAC over it, their purpose,
the session's public id and, for a refresh, the session's rotation counter, under a key
derived from the app's secret. A refresh challenge therefore dies with the rotation it
was answered with: once the counter moves, the same signed answer is refused. A
registration challenge is spent by binding, which happens once per session.

Here: challenges, and the verification of the two JWTs (algorithms pinned, sizes
bounded, the key's type and size checked). The HTTP exchange is `webapp/dbsc/views.py`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .tokens import derive_key

ALGORITHMS = ("ES256", "RS256")
# A browser answers a challenge within milliseconds; a registration offer may wait for
# the browser's next page. Minutes, not the session's life.
CHALLENGE_TTL = timedelta(minutes=5)
# Anything longer is no DBSC JWT: an ES256 one is about 450 bytes, an RS256 one with a
# 4096-bit key about 1,700.
MAX_JWT_LENGTH = 4096
MAX_CHALLENGE_LENGTH = 128
RSA_KEY_SIZES = range(2048, 4097)

# Paths the bound cookie does not cover: the browser neither holds these requests back
# nor refreshes for them. Static files and health checks need no sign-in, and a page's
# scripts fetch /api/ many times at once (session-fetch.js then refreshes through
# /auth/refresh, which is covered).
UNBOUND_PATHS = ("/static/", "/healthz", "/api/")
# A request the browser sent just before it renewed the bound cookie may arrive with an
# access token expired a moment ago: served, not taken for a copied cookie jar.
IN_FLIGHT_LEEWAY = timedelta(seconds=5)

_KEY_LABEL = b"webapp/v1/dbsc-challenge"
_CHALLENGE = re.compile(r"([0-9a-z]{1,12})\.(-|0|[1-9][0-9]{0,9})\.([A-Za-z0-9_-]{43})")


class ChallengePurpose(enum.Enum):
    REGISTER = "register"
    REFRESH = "refresh"


class InvalidProof(Exception):
    """The JWT is malformed, oversized, signed by another key or with another algorithm,
    or answers no challenge of ours."""


@dataclass(frozen=True)
class ChallengeKeys:
    keys: tuple[bytes, ...]  # current secret's key first

    @classmethod
    def from_secrets(cls, secret_key: str, fallbacks: Sequence[str] = ()) -> ChallengeKeys:
        return cls(keys=tuple(derive_key(secret, _KEY_LABEL) for secret in (secret_key, *fallbacks)))


def in_bound_scope(path: str) -> bool:
    """Whether the browser keeps the bound cookie fresh before it sends a request to `path`."""
    return not path.startswith(UNBOUND_PATHS)


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text


def _mac(key: bytes, purpose: ChallengePurpose, session_id: str, counter: str, issued: str) -> str:
    message = "\x00".join((purpose.value, session_id, counter, issued)).encode()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=").decode()


def make_challenge(
    purpose: ChallengePurpose, session_id: str, *, counter: int | None, keys: ChallengeKeys, now: datetime
) -> str:
    """A challenge for one session: `<issued, base 36>.<counter or ->.<mac>`. A refresh
    challenge names the session's current counter; a registration one none."""
    issued = _base36(int(now.timestamp()))
    counter_text = "-" if counter is None else str(counter)
    return f"{issued}.{counter_text}.{_mac(keys.keys[0], purpose, session_id, counter_text, issued)}"


def challenge_is_valid(
    challenge: object,
    purpose: ChallengePurpose,
    session_id: str,
    *,
    counter: int | None,
    keys: ChallengeKeys,
    now: datetime,
) -> bool:
    """Whether `challenge` is one we issued for this purpose, session and counter, within
    `CHALLENGE_TTL`."""
    if not isinstance(challenge, str) or len(challenge) > MAX_CHALLENGE_LENGTH:
        return False
    match = _CHALLENGE.fullmatch(challenge)
    if match is None:
        return False
    issued_text, counter_text, presented = match.groups()
    if counter_text != ("-" if counter is None else str(counter)):
        return False
    try:
        issued = datetime.fromtimestamp(int(issued_text, 36), timezone.utc)
    except (OverflowError, OSError, ValueError):
        return False
    if not now - CHALLENGE_TTL <= issued <= now + timedelta(minutes=1):
        return False
    return any(
        hmac.compare_digest(presented, _mac(key, purpose, session_id, counter_text, issued_text)) for key in keys.keys
    )


# --- the browser's JWTs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A verified registration: the device's public key (a JWK of its public members
    only, as canonical JSON, to store) and the challenge it answered."""

    public_jwk: str
    challenge: str


def _public_key_from_jwk(jwk: object, algorithm: str):
    """The public key of a JWK, if it suits `algorithm` (P-256 for ES256, 2048 to 4096
    bits for RS256). Raises `InvalidProof`."""
    if not isinstance(jwk, dict) or len(json.dumps(jwk)) > MAX_JWT_LENGTH:
        raise InvalidProof("no usable jwk")
    try:
        if algorithm == "ES256":
            key = ECAlgorithm.from_jwk(jwk)
            key = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise InvalidProof("ES256 needs a P-256 key")
        else:
            key = RSAAlgorithm.from_jwk(jwk)
            key = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size not in RSA_KEY_SIZES:
                raise InvalidProof("RS256 needs a 2048- to 4096-bit RSA key")
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError) as error:
        raise InvalidProof(f"unusable jwk: {type(error).__name__}") from None
    return key


def _public_jwk_json(key, algorithm: str) -> str:
    """Only the public members, sorted: what we store, and nothing a client added."""
    if algorithm == "ES256":
        members = json.loads(ECAlgorithm.to_jwk(key))
        public = {name: members[name] for name in ("kty", "crv", "x", "y")}
    else:
        members = json.loads(RSAAlgorithm.to_jwk(key))
        public = {name: members[name] for name in ("kty", "n", "e")}
    return json.dumps(public, sort_keys=True, separators=(",", ":"))


def _algorithm_of(token: object) -> tuple[str, dict]:
    if not isinstance(token, str) or not token or len(token) > MAX_JWT_LENGTH:
        raise InvalidProof("no JWT, or too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidProof("malformed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise InvalidProof("algorithm not allowed")
    if header.get("typ", "dbsc+jwt") != "dbsc+jwt":
        raise InvalidProof("not a DBSC JWT")
    return algorithm, header


def _verified_jti(token: str, key, algorithm: str) -> str:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options={"require": ["jti"], "verify_aud": False, "verify_iss": False},
        )
    except jwt.InvalidTokenError:
        raise InvalidProof("bad signature or claims") from None
    jti = claims.get("jti")
    if not isinstance(jti, str):
        raise InvalidProof("jti is not a string")
    return jti


def verify_registration(token: object) -> Registration:
    """Check a registration JWT: signed with the key it carries (proof of possession).
    Raises `InvalidProof`. The caller checks the challenge (`Registration.challenge`)."""
    algorithm, header = _algorithm_of(token)
    key = _public_key_from_jwk(header.get("jwk"), algorithm)
    jti = _verified_jti(token, key, algorithm)
    return Registration(public_jwk=_public_jwk_json(key, algorithm), challenge=jti)


def verify_refresh(token: object, stored_jwk: str) -> str:
    """Check a refresh JWT against the key the session registered; returns the challenge
    it answers. Raises `InvalidProof` (another key, another algorithm, malformed)."""
    algorithm, _ = _algorithm_of(token)
    stored = json.loads(stored_jwk)
    expected = "ES256" if stored.get("kty") == "EC" else "RS256"
    if algorithm != expected:
        raise InvalidProof("algorithm does not match the registered key")
    return _verified_jti(token, _public_key_from_jwk(stored, algorithm), algorithm)
