"""Reading what the app sends: the cookies an answer sets, the tokens a browser holds, and
the few things the soak looks for in a page. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Production's names (COOKIE_SECURE on).
ACCESS_COOKIE = "__Host-access_token"
REFRESH_COOKIE = "__Host-refresh_token"
AUTH_COOKIES = (ACCESS_COOKIE, REFRESH_COOKIE)

SIGN_IN_PATH = "/auth/login"
# What the app says to a browser whose session ended (webapp/auth/hooks.py, SIGN_OUT_MESSAGES).
REUSE_WORDS = "a copy of this browser's sign-in was used somewhere else"
REVOKED_WORDS = "signed out from another of your devices"
# The sign-in form's answer when every password-check slot is taken (webapp/auth/ratelimit.py).
BUSY_WORDS = "Signing in is busy right now"
# What static/js/session-fetch.js's notice says when the 401 gave no reason.
SCRIPT_EXPIRED_MESSAGE = "Your session has expired."

_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_INPUT = re.compile(r"<input\b[^>]*>")
_VALUE = re.compile(r'\bvalue="([^"]*)"')
_FLASH = re.compile(r'<div class="flash flash-\w+"[^>]*>(.*?)</div>', re.S)
_SESSION_ROW = re.compile(r'data-session-id="([^"]+)"')
_DISMISS = re.compile(r'action="(/account/alerts/\d+/dismiss)"')
_REUSE_ALERT = 'data-testid="reuse-alert"'


@dataclass(frozen=True)
class RefreshToken:
    """`<session id>.<counter>.<MAC>`: the soak reads its own cookie jar, as malware would."""

    session_id: str
    counter: int

    @classmethod
    def parse(cls, value: str | None) -> RefreshToken | None:
        parts = (value or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]))


@dataclass(frozen=True)
class AccessClaims:
    """The claims of an access JWT that the soak needs (read, not verified)."""

    session_id: str
    counter: int
    expires_at: int

    @classmethod
    def parse(cls, value: str | None) -> AccessClaims | None:
        parts = (value or "").split(".")
        if len(parts) != 3:
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            return cls(str(payload["sid"]), int(payload["ctr"]), int(payload["exp"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None


def parse_set_cookies(headers: Iterable[str]) -> dict[str, str | None]:
    """The cookies `Set-Cookie` headers set, by name; None for one they delete."""
    found: dict[str, str | None] = {}
    for header in headers:
        pair, *attributes = header.split(";")
        name, _, value = pair.partition("=")
        deleted = value.strip() in ("", '""') or any(
            attribute.strip().lower().replace(" ", "") == "max-age=0" for attribute in attributes
        )
        found[name.strip()] = None if deleted else value.strip()
    return found


def auth_cookie_change(set_cookies: Mapping[str, str | None]) -> tuple[bool, bool, bool]:
    """(rotated, grace, cleared) for an answer's cookies: a new refresh cookie; a new
    access cookie alone (a grace answer); the auth cookies deleted."""
    refresh = set_cookies.get(REFRESH_COOKIE, "absent")
    access = set_cookies.get(ACCESS_COOKIE, "absent")
    rotated = refresh not in ("absent", None)
    grace = not rotated and access not in ("absent", None)
    cleared = refresh is None or access is None
    return rotated, grace, cleared


def csrf_meta(page: str) -> str | None:
    """The CSRF token of `<meta name="csrf-token">`: only signed-in pages carry it."""
    match = _META_CSRF.search(page)
    return html.unescape(match[1]) if match else None


def form_csrf_token(page: str) -> str | None:
    """The first form's hidden `csrf_token`."""
    for tag in _INPUT.findall(page):
        if 'name="csrf_token"' in tag:
            value = _VALUE.search(tag)
            if value:
                return html.unescape(value[1])
    return None


def flash_messages(page: str) -> list[str]:
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split()) for text in _FLASH.findall(page)]


def listed_session_ids(devices_page: str) -> list[str]:
    return _SESSION_ROW.findall(devices_page)


def reuse_alert_dismiss_paths(devices_page: str) -> list[str]:
    """The "This was me" forms of the page's alerts (empty when no reuse alert shows)."""
    if _REUSE_ALERT not in devices_page:
        return []
    return _DISMISS.findall(devices_page)


def reason_given(body: str) -> str | None:
    """The server's sentence for why a session ended, from a 401 that signed the browser
    out, as session-fetch.js's `reasonGiven` reads it: `{"error": "session_expired",
    "message": ...}`, else None."""
    return _session_expired_field(body, "message")


def reason_named(body: str) -> str | None:
    """The name of that reason (`"reason": "revoked_by_user"`), which session-fetch.js's
    "Sign in again" link passes on as `?why=`, else None."""
    return _session_expired_field(body, "reason")


def _session_expired_field(body: str, name: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("error") != "session_expired":
        return None
    value = data.get(name)
    return value if isinstance(value, str) else None
