"""Device Bound Session Credentials (DBSC): the checks, in plain Python.

A Chrome browser that supports DBSC answers our offer (`Secure-Session-Registration`)
with a JWT signed by a key that never leaves the device, carrying the key itself (`jwk`)
and our challenge (`jti`). We keep the public key on the session. From then on the
session's access cookie is renewed only through the refresh endpoint, with a JWT over a
fresh challenge signed by that key: a copied cookie jar stops working when its access
cookie expires (sessions.rotate_refresh_token refuses the refresh cookie alone).

Challenges are stateless: the time they were issued and an HMAC over it, their purpose,
the session's public id and the session's state, under a key derived from the app's
secret. For a refresh the state is the session's rotation counter and when it last
rotated: a refresh challenge dies with the rotation (or the re-sent rotation) it was
answered with, so the same signed answer is never accepted twice. A registration
challenge is spent by binding, which happens once per session, within minutes of its
sign-in (sessions.bind_to_device): a copy of the cookies taken later cannot bind the
session to a thief's key.

Here: challenges, and the verification of the two JWTs (algorithms pinned, sizes
bounded, the key's type and size checked). The HTTP exchange is `webapp/dbsc/views.py`.
"""

from __future__ import annotations

import base64
import enum
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .tokens import base36, derive_key, mac

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
_CHALLENGE = re.compile(r"([0-9a-z]{1,12})\.([A-Za-z0-9_-]{43})")
# The state a registration challenge is made over: the session is not bound yet.
UNBOUND = "unbound"
# Members only a private key has: a JWK that carries one is refused before any arithmetic
# (rebuilding an RSA key from a private exponent costs seconds of CPU).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class ChallengePurpose(enum.Enum):
    REGISTER = "register"
    REFRESH = "refresh"


class InvalidProof(Exception):
    """The JWT is malformed, oversized, signed by another key or with another algorithm."""


class UnknownChallenge(InvalidProof):
    """The JWT answers no live challenge of ours for this session and its state: stale,
    answered already, or another session's."""


@dataclass(frozen=True)
class ChallengeKeys:
    keys: tuple[bytes, ...]  # current secret's key first

    @classmethod
    def from_secrets(cls, secret_key: str, fallbacks: Sequence[str] = ()) -> ChallengeKeys:
        return cls(keys=tuple(derive_key(secret, _KEY_LABEL) for secret in (secret_key, *fallbacks)))


def refresh_state(counter: int, rotated_at: datetime) -> str:
    """What a refresh challenge is made over: the session's rotation, and when it last
    moved or was sent again (a lost rotation re-sent keeps its counter). Not the counter
    known delivered: the page that delivers the last rotation often races the browser's
    next renewal, and must not spend a second signature of the device's key."""
    return f"{counter}@{rotated_at.isoformat()}"


def in_bound_scope(path: str) -> bool:
    """Whether the browser keeps the bound cookie fresh before it sends a request to `path`."""
    return not path.startswith(UNBOUND_PATHS)


_SKIPPED = re.compile(r'\s*([a-z_]+)\s*;\s*session_identifier\s*=\s*"([A-Za-z0-9_-]{1,64})"\s*')


def renewal_skipped(header: str, session_id: str) -> bool:
    """Whether `Secure-Session-Skipped` (the browser sent a request without renewing the
    bound cookie first, e.g. `quota_exceeded;session_identifier="..."`) names `session_id`."""
    match = _SKIPPED.fullmatch(header[:200])
    return match is not None and match[2] == session_id


def _mac(key: bytes, purpose: ChallengePurpose, session_id: str, state: str, issued: str) -> str:
    return mac(key, "\x00".join((purpose.value, session_id, state, issued)).encode())


def make_challenge(
    purpose: ChallengePurpose, session_id: str, *, state: str, keys: ChallengeKeys, now: datetime
) -> str:
    """A challenge for one session in one state: `<issued, base 36>.<mac>`."""
    issued = base36(int(now.timestamp()))
    return f"{issued}.{_mac(keys.keys[0], purpose, session_id, state, issued)}"


def challenge_is_valid(
    challenge: object, purpose: ChallengePurpose, session_id: str, *, state: str, keys: ChallengeKeys, now: datetime
) -> bool:
    """Whether `challenge` is one we issued for this purpose, session and state, within
    `CHALLENGE_TTL`."""
    if not isinstance(challenge, str) or len(challenge) > MAX_CHALLENGE_LENGTH:
        return False
    match = _CHALLENGE.fullmatch(challenge)
    if match is None:
        return False
    issued_text, presented = match.groups()
    try:
        issued = datetime.fromtimestamp(int(issued_text, 36), timezone.utc)
    except (OverflowError, OSError, ValueError):
        return False
    if not now - CHALLENGE_TTL <= issued <= now + timedelta(minutes=1):
        return False
    return any(hmac.compare_digest(presented, _mac(key, purpose, session_id, state, issued_text)) for key in keys.keys)


# --- the browser's JWTs ---------------------------------------------------------------------------


def _b64_integer(value: object, *, max_bytes: int) -> int:
    if not isinstance(value, str) or not 0 < len(value) <= (max_bytes * 4 + 2) // 3:
        raise InvalidProof("a key member is missing or too long")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        raise InvalidProof("a key member is not base64url") from None
    return int.from_bytes(raw, "big")


def _public_key_from_jwk(jwk: object, algorithm: str):
    """The public key a JWK describes, if it suits `algorithm`: P-256 for ES256, an RSA
    key of 2048 to 4096 bits with exponent 65537 for RS256. Built from its public numbers,
    each checked for size first, so that no client can make us do expensive arithmetic.
    Raises `InvalidProof`."""
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidProof("not a public JWK")
    try:
        if algorithm == "ES256":
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
                raise InvalidProof("ES256 needs a P-256 key")
            x, y = _b64_integer(jwk.get("x"), max_bytes=32), _b64_integer(jwk.get("y"), max_bytes=32)
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        if jwk.get("kty") != "RSA":
            raise InvalidProof("RS256 needs an RSA key")
        modulus, exponent = _b64_integer(jwk.get("n"), max_bytes=512), _b64_integer(jwk.get("e"), max_bytes=4)
        if modulus.bit_length() not in RSA_KEY_SIZES or exponent != 65537:
            raise InvalidProof("RS256 needs a 2048- to 4096-bit RSA key with exponent 65537")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError:
        # A point that is not on the curve, and the like.
        raise InvalidProof("not a valid public key") from None


def _public_jwk_json(key, algorithm: str) -> str:
    """Only the public members, sorted: what we store."""
    members = json.loads((ECAlgorithm if algorithm == "ES256" else RSAAlgorithm).to_jwk(key))
    names = ("kty", "crv", "x", "y") if algorithm == "ES256" else ("kty", "n", "e")
    return json.dumps({name: members[name] for name in names}, sort_keys=True, separators=(",", ":"))


def _header_and_challenge(token: object, challenge_ok: Callable[[object], bool]) -> tuple[str, dict]:
    """The JWT's algorithm and header, once its `jti` is a live challenge: checked before
    any signature, so junk costs a MAC, not a public-key operation."""
    if not isinstance(token, str) or not token or len(token) > MAX_JWT_LENGTH:
        raise InvalidProof("no JWT, or too long")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise InvalidProof("malformed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise InvalidProof("algorithm not allowed")
    if header.get("typ", "dbsc+jwt") != "dbsc+jwt":
        raise InvalidProof("not a DBSC JWT")
    if not challenge_ok(claims.get("jti")):
        raise UnknownChallenge("not a live challenge for this session")
    return algorithm, header


def _verify_signature(token: str, key, algorithm: str) -> None:
    try:
        jwt.decode(
            token, key, algorithms=[algorithm], options={"require": ["jti"], "verify_aud": False, "verify_iss": False}
        )
    except jwt.InvalidTokenError:
        raise InvalidProof("bad signature") from None


def verify_registration(token: object, challenge_ok: Callable[[object], bool]) -> str:
    """Check a registration JWT: its `jti` passes `challenge_ok`, and it is signed with the
    key it carries (proof of possession). Returns that key's public JWK, as canonical
    JSON, to store. Raises `UnknownChallenge` or `InvalidProof`."""
    algorithm, header = _header_and_challenge(token, challenge_ok)
    key = _public_key_from_jwk(header.get("jwk"), algorithm)
    _verify_signature(token, key, algorithm)
    return _public_jwk_json(key, algorithm)


def verify_refresh(token: object, stored_jwk: str, challenge_ok: Callable[[object], bool]) -> None:
    """Check a refresh JWT: its `jti` passes `challenge_ok`, and it is signed by the key
    the session registered, with that key's algorithm. Raises `UnknownChallenge` or
    `InvalidProof`."""
    algorithm, _ = _header_and_challenge(token, challenge_ok)
    try:
        stored = json.loads(stored_jwk)
        expected = "ES256" if stored.get("kty") == "EC" else "RS256"
    except (ValueError, TypeError, AttributeError):
        raise InvalidProof("the stored key is unreadable") from None
    if algorithm != expected:
        raise InvalidProof("algorithm does not match the registered key")
    _verify_signature(token, _public_key_from_jwk(stored, algorithm), algorithm)
