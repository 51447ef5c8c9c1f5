"""Authentication at the edge: sign each request in from its cookies.

A valid access token whose session is still active signs the request in (one JWT check,
one indexed lookup). Otherwise, with a refresh cookie, the request is rotated silently so
an active user never meets the login page mid-work. Everything below calls one engine
function and turns its answer into `g.signed_in` and a cookie decision.

Non-browser clients send `Authorization: Bearer <access token>` to /api/. Such a request
is judged by that header alone: its cookies are neither read nor written, there is no
silent rotation (the client refreshes with /api/auth/refresh) and no CSRF check (without
cookies there is no ambient credential to forge a request with).
"""

from __future__ import annotations

from datetime import datetime
from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, flash, g, jsonify, redirect, request, url_for

from .. import sessions
from ..extensions import csrf, db
from ..sessions import Device, IssuedTokens, SessionPolicy
from ..tokens import InvalidToken
from . import cookies

SESSION_EXPIRED_MESSAGE = "Your session has expired. Please sign in again."


def current_policy() -> SessionPolicy:
    return current_app.extensions["session_policy"]


def current_time() -> datetime:
    return current_app.config["CLOCK"]()


def current_device(client_name: str | None = None) -> Device:
    # These are stored as text: PostgreSQL refuses NUL bytes in text, so drop them.
    return Device(
        user_agent=(request.user_agent.string or "").replace("\x00", "")[:512],
        ip_address=request.remote_addr or "",
        client_name=None if client_name is None else client_name.replace("\x00", ""),
    )


def is_bearer_request() -> bool:
    # Only the Bearer scheme: a proxy's Basic auth in front of the app must not turn
    # browser requests into token requests.
    scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
    return scheme.lower() == "bearer" and request.path.startswith("/api/")


def is_token_endpoint() -> bool:
    """The JSON sign-in, refresh and revoke endpoints take credentials from the body only."""
    return request.path.startswith("/api/auth/")


def protect_from_csrf() -> None:
    """Flask-WTF's check, except for requests that carry no cookie credential at all."""
    if not current_app.config["WTF_CSRF_ENABLED"] or is_bearer_request():
        return
    csrf.protect(apply_exemptions=True)


def authenticate_request() -> None:
    """Before every request: set `g.signed_in` from a bearer token or from the cookies."""
    g.signed_in = None
    g.issued_tokens = None
    g.refresh_rejected = False
    g.bearer_error = None
    if request.endpoint == "static" or is_token_endpoint():
        return
    if is_bearer_request():
        sign_in_from_bearer_token(request.headers["Authorization"])
    else:
        sign_in_from_cookies()


def sign_in_from_bearer_token(authorization: str) -> None:
    token = authorization.partition(" ")[2].strip()
    if not token:
        g.bearer_error = "invalid_request"
        return
    try:
        g.signed_in = sign_in_with_access_token(token, policy=current_policy(), now=current_time())
    except (InvalidToken, sessions.SignedOut):
        g.bearer_error = "invalid_token"


def sign_in_with_access_token(token: str, *, policy: SessionPolicy, now: datetime) -> sessions.SignedIn:
    """The engine's check of an access token, then the throttled last-active write."""
    # The engine, not the ORM session: this read runs on every signed-in request, and
    # given the engine the check runs straight on a pooled connection (prepared.py).
    signed_in = sessions.authenticate(db.engine, token, policy=policy, now=now)
    sessions.touch_session(db.session, signed_in, now=now)
    return signed_in


def sign_in_from_cookies() -> None:
    """Sign in from the access cookie, or rotate from the refresh cookie if needed."""
    access_token = request.cookies.get(cookies.access_cookie_name())
    refresh_token = request.cookies.get(cookies.refresh_cookie_name())
    if not access_token and not refresh_token:
        return
    policy, now = current_policy(), current_time()

    if access_token:
        try:
            g.signed_in = sign_in_with_access_token(access_token, policy=policy, now=now)
            return
        except (InvalidToken, sessions.SignedOut):
            pass  # expired, foreign or revoked: the refresh token decides

    if not refresh_token:
        cookies.schedule_clear()
        return
    rotate_from_cookie(refresh_token, policy=policy, now=now)


def rotate_from_cookie(refresh_token: str, *, policy: SessionPolicy, now: datetime) -> IssuedTokens | None:
    try:
        issued = sessions.rotate_refresh_token(db.session, refresh_token, policy=policy, now=now)
    except sessions.RefreshRejected:
        g.signed_in = None
        g.refresh_rejected = True
        cookies.schedule_clear()
        return None
    g.signed_in = issued.signed_in
    g.issued_tokens = issued
    cookies.schedule_set(issued)
    return issued


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.blueprint == "api"


def login_required(view):
    """Let signed-in requests through; send others to sign in (pages) or 401 (API)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if g.get("signed_in") is None:
            if g.get("bearer_error"):
                response = jsonify(error=g.bearer_error, message="The access token is invalid or has expired.")
                response.headers["WWW-Authenticate"] = f'Bearer error="{g.bearer_error}"'
                return response, 401
            if wants_json():
                error = "session_expired" if g.get("refresh_rejected") else "not_signed_in"
                return jsonify(error=error), 401
            if g.get("refresh_rejected"):
                flash(SESSION_EXPIRED_MESSAGE, "warning")
            return redirect(url_for("auth.login", next=request_path_with_query()))
        return view(*args, **kwargs)

    return wrapped


def request_path_with_query() -> str:
    query = request.query_string.decode("latin-1")
    return f"{request.path}?{query}" if query else request.path


def safe_next_url(target: str | None, default: str) -> str:
    """`target` when it is a path on this site, else `default` (no open redirect).

    Browsers treat a backslash as a slash and drop tabs and newlines inside URLs, so
    `/\\evil.com` and `/\\t/evil.com` would both leave the site: refuse them all.
    """
    if not target or len(target) > 2000:
        return default
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target) or "\\" in target:
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
