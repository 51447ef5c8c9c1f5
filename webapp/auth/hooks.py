"""Authentication at the edge: sign each request in from its cookies.

A valid access token whose session is still active signs the request in (one JWT check,
one indexed lookup). Otherwise, with a refresh cookie, the request is rotated silently so
an active user never meets the login page mid-work. Everything below calls one engine
function and turns its answer into `g.signed_in` and a cookie decision.
"""

from __future__ import annotations

from datetime import datetime
from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, flash, g, jsonify, redirect, request, url_for

from .. import sessions
from ..extensions import db
from ..sessions import Device, IssuedTokens, SessionPolicy
from ..tokens import InvalidToken
from . import cookies

SESSION_EXPIRED_MESSAGE = "Your session has expired. Please sign in again."


def current_policy() -> SessionPolicy:
    return current_app.extensions["session_policy"]


def current_time() -> datetime:
    return current_app.config["CLOCK"]()


def current_device(client_name: str | None = None) -> Device:
    return Device(
        user_agent=(request.user_agent.string or "")[:512],
        ip_address=request.remote_addr or "",
        client_name=client_name,
    )


def sign_in_from_cookies() -> None:
    """Before every request: set `g.signed_in`, rotating from the refresh cookie if needed."""
    g.signed_in = None
    g.issued_tokens = None
    g.refresh_rejected = False
    if request.endpoint == "static":
        return
    access_token = request.cookies.get(cookies.access_cookie_name())
    refresh_token = request.cookies.get(cookies.refresh_cookie_name())
    if not access_token and not refresh_token:
        return
    policy, now = current_policy(), current_time()

    if access_token:
        try:
            g.signed_in = sessions.authenticate(db.session, access_token, policy=policy, now=now)
        except (InvalidToken, sessions.SignedOut):
            pass  # expired, foreign or revoked: the refresh token decides
        else:
            sessions.touch_session(db.session, g.signed_in, now=now)
            return

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
