"""Device cookies: a browser that has signed in to an account keeps signing in to it while
the account is limited for everybody else (OWASP's "device cookies" against lockout).

At each successful sign-in (the form, registration) the browser gets a cookie
`<nonce>.<mac>`: a random nonce, and an HMAC-SHA256 of the nonce and the normalised email
under a key derived from `SECRET_KEY` (keys from `SECRET_KEY_FALLBACKS` still verify). It
names the account without carrying it: only an attempt that submits that very email can
verify it, and nothing in the cookie gives the address away. With a genuine device cookie
for the submitted email, `auth/ratelimit.py` replaces the failure budgets of the account
and of the address by this device's own small one, keyed by its nonce.

It is not a credential: it signs nobody in, and a stolen one buys a thief a few guesses
every quarter of an hour at one account. So it outlives sessions (a year; signing out
keeps it) and is `HttpOnly` and `SameSite=Strict`: it is only ever needed by a POST from
our own sign-in forms.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import timedelta

from flask import Response, after_this_request, current_app, request

from ..accounts import normalize_email
from ..tokens import derive_key, mac

MAX_AGE = timedelta(days=365)
_KEY_LABEL = b"webapp/v1/device-cookie-mac"
_COOKIE = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")


def device_cookie_name() -> str:
    return "__Host-device" if current_app.config["COOKIE_SECURE"] else "device"


def _keys() -> list[bytes]:
    """The current key first, then those of the fallback secrets."""
    config = current_app.config
    return [derive_key(secret, _KEY_LABEL) for secret in (config["SECRET_KEY"], *config["SECRET_KEY_FALLBACKS"])]


def _mac(key: bytes, nonce: str, email: str) -> str:
    return mac(key, nonce.encode() + b"\x00" + email.encode("utf-8", "surrogatepass"))


def mint_device_cookie(email: str, *, key: bytes) -> str:
    """A new device cookie value for `email` (already normalised)."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_mac(key, nonce, email)}"


def verified_nonce(value: str, email: str, *, keys: Sequence[bytes]) -> str | None:
    """The nonce of `value` if it is a device cookie we issued for `email` (normalised),
    else None: malformed, forged, or another account's."""
    match = _COOKIE.fullmatch(value)
    if match is None:
        return None
    nonce, presented = match.groups()
    if any(hmac.compare_digest(presented, _mac(key, nonce, email)) for key in keys):
        return nonce
    return None


def device_nonce(email: str) -> str | None:
    """The nonce of this browser's device cookie if it names `email`, else None."""
    value = request.cookies.get(device_cookie_name())
    if not value:
        return None
    return verified_nonce(value, normalize_email(email), keys=_keys())


def remember_device(email: str) -> None:
    """After a successful sign-in to `email`: give this browser a new device cookie."""
    value = mint_device_cookie(normalize_email(email), key=_keys()[0])

    @after_this_request
    def set_device_cookie(response: Response) -> Response:
        response.set_cookie(
            device_cookie_name(),
            value,
            max_age=int(MAX_AGE.total_seconds()),
            path="/",
            secure=current_app.config["COOKIE_SECURE"],
            httponly=True,
            samesite="Strict",
        )
        return response
