"""Access JWTs and refresh tokens: minting and verifying, with no Flask import.

Keys are derived from the app secret with HMAC-SHA256 under a fixed label, one label
per purpose, so the JWT signing key, the refresh-token MAC key and Flask's cookie key
are independent even though one secret feeds them all. Old secrets (the app's
`SECRET_KEY_FALLBACKS`) still verify; only the current one signs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

ACCESS_ALGORITHM = "HS256"
# `ctr`: the rotation counter of the refresh token handed out with this access token, so
# that using it proves that rotation reached its holder (see sessions.rotate_refresh_token).
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "ctr", "iat", "exp", "jti")
MAX_COUNTER = 9_999_999_999
# Anything longer than this is not a token we issued; refuse it before parsing.
MAX_TOKEN_LENGTH = 2048

_ACCESS_KEY_LABEL = b"webapp/v1/access-token-signing"
_REFRESH_KEY_LABEL = b"webapp/v1/refresh-token-mac"
_REFRESH_TOKEN = re.compile(r"([A-Za-z0-9_-]{22})\.(0|[1-9][0-9]{0,9})\.([A-Za-z0-9_-]{43})")


class InvalidToken(Exception):
    """The token is not one we issued, or is malformed: the request is signed out."""


class AccessTokenExpired(InvalidToken):
    """A genuine access token whose lifetime is over: try the refresh token."""


def derive_key(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message`, base64url without padding (43 characters): the MAC of
    refresh tokens, recovery links and DBSC challenges."""
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=").decode()


def base36(number: int) -> str:
    """A non-negative integer in base 36 (0-9a-z): short timestamps in tokens."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text


def key_id(key: bytes) -> str:
    """A public fingerprint of a key, for the JWT `kid` header."""
    return hashlib.sha256(b"kid:" + key).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class KeyRing:
    """Keys derived from the current secret and its fallbacks. Hashed by identity: one
    key ring lives as long as its app, and keys the verification cache below."""

    signing_kid: str
    signing_key: bytes
    verification_keys: dict[str, bytes]  # kid -> key, current first
    refresh_mac_keys: tuple[bytes, ...]  # current first

    @classmethod
    def from_secrets(cls, secret_key: str, fallbacks: Sequence[str] = ()) -> KeyRing:
        all_secrets = [secret_key, *fallbacks]
        access_keys = [derive_key(secret, _ACCESS_KEY_LABEL) for secret in all_secrets]
        return cls(
            signing_kid=key_id(access_keys[0]),
            signing_key=access_keys[0],
            verification_keys={key_id(key): key for key in access_keys},
            refresh_mac_keys=tuple(derive_key(secret, _REFRESH_KEY_LABEL) for secret in all_secrets),
        )


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    session_id: str
    counter: int
    issued_at: int
    expires_at: int
    token_id: str


def encode_access_token(
    *,
    user_id: int,
    session_id: str,
    counter: int,
    issued_at: int,
    expires_at: int,
    keys: KeyRing,
    issuer: str,
    audience: str,
) -> str:
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "sid": session_id,
        "ctr": counter,
        "iat": issued_at,
        "exp": expires_at,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, keys.signing_key, algorithm=ACCESS_ALGORITHM, headers={"kid": keys.signing_kid})


def decode_access_token(token: str, *, keys: KeyRing, now: int, issuer: str, audience: str) -> AccessClaims:
    """Verify an access JWT at time `now` (seconds since the epoch).

    Raises `AccessTokenExpired` for a genuine token past its `exp`, and `InvalidToken`
    for everything else: bad signature, unknown `kid`, another algorithm, a missing or
    mistyped claim, wrong issuer or audience.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("not a token")
    claims = _verified_claims(token, keys, issuer, audience)
    if claims.issued_at > now + 60:
        raise InvalidToken("issued in the future")
    if claims.expires_at <= now:
        raise AccessTokenExpired("expired")
    return claims


# A browser presents the same access token on every request for its whole lifetime, and
# verifying it is a pure function of the token and the keys: remember the answers for
# genuine tokens (failures raise and are not cached), so each token is parsed once per
# worker instead of once per request. Time is checked on every call, outside the cache,
# and whether the session is still active is always asked of the database.
@functools.lru_cache(maxsize=8192)
def _verified_claims(token: str, keys: KeyRing, issuer: str, audience: str) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
        key = keys.verification_keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
        if key is None or header.get("alg") != ACCESS_ALGORITHM:
            raise InvalidToken("unknown key or algorithm")
        # PyJWT reads the wall clock; time is ours to inject, so exp and iat are checked by
        # the caller and PyJWT checks signature, presence, issuer and audience.
        claims = jwt.decode(
            token,
            key,
            algorithms=[ACCESS_ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidTokenError as error:
        raise InvalidToken(str(error)) from None

    sub, sid, ctr, iat, exp, jti = (claims.get(name) for name in ("sub", "sid", "ctr", "iat", "exp", "jti"))
    if not (
        isinstance(sub, str)
        and sub.isascii()
        and sub.isdigit()
        and len(sub) <= 18
        and isinstance(sid, str)
        and isinstance(jti, str)
        and type(ctr) is int
        and 0 <= ctr <= MAX_COUNTER
        and type(iat) is int
        and type(exp) is int
    ):
        raise InvalidToken("malformed claims")
    return AccessClaims(user_id=int(sub), session_id=sid, counter=ctr, issued_at=iat, expires_at=exp, token_id=jti)


def _refresh_mac(key: bytes, session_id: str, counter: int) -> str:
    return mac(key, f"{session_id}.{counter}".encode())


def mint_refresh_token(session_id: str, counter: int, *, keys: KeyRing) -> str:
    """The refresh token for one counter of one session: a pure function of both.

    Requests racing on one rotation therefore all hand out the same successor.
    """
    return f"{session_id}.{counter}.{_refresh_mac(keys.refresh_mac_keys[0], session_id, counter)}"


def parse_refresh_token(token: str, *, keys: KeyRing) -> tuple[str, int]:
    """Return `(session_id, counter)` of a refresh token whose MAC verifies.

    Raises `InvalidToken` otherwise. This costs no query: forged tokens never reach the
    database.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("not a refresh token")
    match = _REFRESH_TOKEN.fullmatch(token)
    if match is None:
        raise InvalidToken("not a refresh token")
    session_id, counter_text, presented_mac = match.groups()
    counter = int(counter_text)
    if not any(
        hmac.compare_digest(presented_mac, _refresh_mac(key, session_id, counter)) for key in keys.refresh_mac_keys
    ):
        raise InvalidToken("bad MAC")
    return session_id, counter
