"""Authentication at the edge: sign each request in from its cookies.

A valid access token whose session is still active signs the request in (one JWT check,
one indexed lookup). Otherwise, with a refresh cookie, the request is rotated silently so
an active user never meets the login page mid-work. Everything below calls one engine
function and records its answer in the request's `RequestAuth` (`g.auth`).

Non-browser clients send `Authorization: Bearer <access token>` to /api/. Such a request
is judged by that header alone: its cookies are neither read nor written, there is no
silent rotation (the client refreshes with /api/auth/refresh) and no CSRF check (without
cookies there is no ambient credential to forge a request with).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, request, url_for

from .. import device_binding, sessions
from ..database import unit_of_work
from ..devices import Device
from ..errors import error_response, wants_json
from ..extensions import db
from ..metrics import current_metrics
from ..security_events import record_copied_sign_in_refused
from ..sessions import EndReason, IssuedTokens, SessionPolicy, SignedIn
from ..tokens import InvalidToken
from . import cookies
from .request_auth import BearerError, RequestAuth, current_auth, is_bearer_request, is_token_endpoint

SESSION_EXPIRED_MESSAGE = "Your session has expired. Please sign in again."

# What a browser whose session ended is told, one reason each (SPEC: "Why a browser was
# signed out"), and how loudly.
SIGN_OUT_MESSAGES: dict[EndReason, tuple[str, str]] = {
    EndReason.EXPIRED: (SESSION_EXPIRED_MESSAGE, "warning"),
    EndReason.SIGNED_OUT: ("You signed out of this browser. Sign in to continue.", "info"),
    EndReason.REVOKED_BY_USER: ("This device was signed out from another of your devices.", "warning"),
    EndReason.SIGNED_OUT_BY_USER: ("This device was signed out from another of your devices.", "warning"),
    EndReason.PASSWORD_CHANGED: (
        "Your password was changed, so this device was signed out. Sign in with the new password.",
        "warning",
    ),
    # A copy of the cookies of the browser that changed the password, come back later.
    EndReason.SUPERSEDED: (
        "Your password was changed, so this device was signed out. Sign in with the new password.",
        "warning",
    ),
    EndReason.REUSE: (
        "We signed you out to protect your account: a copy of this browser's sign-in was used somewhere else. "
        "Sign in again, then check your devices and change your password.",
        "danger",
    ),
    EndReason.SESSION_LIMIT: (
        "This device was signed out because your account was signed in on too many devices.",
        "warning",
    ),
    EndReason.ACCOUNT_DISABLED: ("An administrator has disabled this account.", "danger"),
    EndReason.SIGNED_OUT_BY_OPERATOR: ("An administrator signed you out.", "warning"),
}


def sign_out_message(reason: EndReason | None) -> tuple[str, str]:
    """The words (and flash category) for a browser signed out for `reason`."""
    return SIGN_OUT_MESSAGES.get(reason, (SESSION_EXPIRED_MESSAGE, "warning"))


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


def authenticate_request() -> None:
    """Before every request: sign it in from a bearer token or from the cookies."""
    auth = current_auth()
    if request.endpoint in ("static", "dbsc.refresh", "metrics.scrape") or is_token_endpoint():
        # dbsc.refresh renews a device-bound session with the device's proof, itself; a
        # scrape of the metrics carries a token of its own, and no cookies.
        return
    if is_bearer_request():
        sign_in_from_bearer_token(auth, request.headers["Authorization"])
    else:
        sign_in_from_cookies(auth)
        if auth.sign_out_reason is not None and not wants_json():
            # Whatever page this browser lands on (a protected one sends it to sign in,
            # the home page shows itself) says why it was signed out. A forged cookie
            # had no session to speak of: nothing is said. A script's request is told in
            # its 401 instead (`login_required`): a flash stored by a script's late answer
            # could come back on a later page, after the person signed in again.
            flash(*sign_out_message(auth.sign_out_reason))


def sign_in_from_bearer_token(auth: RequestAuth, authorization: str) -> None:
    token = authorization.partition(" ")[2].strip()
    if not token:
        auth.bearer_refused(BearerError.INVALID_REQUEST)
        return
    try:
        auth.authenticated(sign_in_with_access_token(token, policy=current_policy(), now=current_time()))
    except (InvalidToken, sessions.SignedOut):
        auth.bearer_refused(BearerError.INVALID_TOKEN)


def sign_in_with_access_token(
    token: str, *, policy: SessionPolicy, now: datetime, refresh_token: str | None = None
) -> SignedIn:
    """The engine's check of an access token (with the refresh cookie the browser sent
    beside it, which may prove a rotation reached it), then the throttled writes."""
    # The engine, not the ORM session: this read runs on every signed-in request, and
    # given the engine the check runs straight on a pooled connection (dbapi_select.py).
    signed_in = sessions.authenticate(db.engine, token, policy=policy, now=now, refresh_token=refresh_token)
    if sessions.touch_session(db.session, signed_in, now=now):
        db.session.commit()
    return signed_in


def sign_in_from_cookies(auth: RequestAuth) -> None:
    """Sign in from the access cookie, or rotate from the refresh cookie if needed."""
    access_token = request.cookies.get(cookies.access_cookie_name())
    refresh_token = request.cookies.get(cookies.refresh_cookie_name())
    if not access_token and not refresh_token:
        return
    policy, now = current_policy(), current_time()

    if access_token:
        try:
            auth.authenticated(
                sign_in_with_access_token(access_token, policy=policy, now=now, refresh_token=refresh_token)
            )
            return
        except (InvalidToken, sessions.SignedOut):
            pass  # expired, foreign or revoked: the refresh token decides

    if not refresh_token:
        auth.sign_out()
        return
    rotate_from_cookie(auth, refresh_token, policy=policy, now=now, access_token=access_token)


def rotate_from_cookie(
    auth: RequestAuth,
    refresh_token: str,
    *,
    policy: SessionPolicy,
    now: datetime,
    access_token: str | None = None,
) -> IssuedTokens | None:
    """Rotate the browser's refresh token: signed in with new tokens, or signed out."""
    rejected = bound = None
    with unit_of_work(db.session):
        try:
            issued = sessions.rotate_refresh_token(db.session, refresh_token, policy=policy, now=now)
        except sessions.DeviceKeyRequired as error:
            issued, bound = None, error
        except sessions.RefreshRejected as error:
            # Caught inside the unit of work: a reused token's revocation and its event
            # are committed with it.
            issued, rejected = None, error
    if bound is not None:
        refuse_without_device_key(auth, bound, access_token, policy=policy, now=now)
        return None
    if rejected is not None and rejected.superseded:
        # A request sent just before this browser changed its password: the answer to
        # that change set the new session's cookies, which this one must not clear.
        auth.signed_out_leaving_cookies()
        return None
    if rejected is not None:
        auth.sign_out(refresh_rejected=True, reason=rejected.reason)
        return None
    current_metrics().refresh_answered(issued)
    auth.sign_in(issued)
    return issued


# A bound session's access token expired longer ago than this, presented on a path the
# browser keeps fresh: no browser of the device's own would send that.
ALARM_AFTER = timedelta(minutes=1)


def refuse_without_device_key(
    auth: RequestAuth,
    bound: sessions.DeviceKeyRequired,
    access_token: str | None,
    *,
    policy: SessionPolicy,
    now: datetime,
) -> None:
    """A session bound to its device (DBSC) presented its cookies without a fresh access
    cookie. Only the device's key renews it (webapp/dbsc/views.py), so this request is
    not rotated. Which of three cases it is decides the rest:

    - its access token expired a moment ago (`IN_FLIGHT_LEEWAY`): sent just before the
      browser renewed it. Served, nothing written;
    - a path the bound cookie does not cover (/api/ and the like): the browser does not
      renew the cookie for those. No alarm: a page's script then goes through
      /auth/refresh, which it does cover;
    - its access token expired less than `ALARM_AFTER` ago (a slow request), or the
      browser says it could not renew this session (`Secure-Session-Skipped`: its signing
      quota, our server unreachable) and let the request go without the cookie. No
      alarm. The header could be forged, but it only spares an alert; it renews nothing;
    - otherwise the browser would have renewed the cookie first: these are copied cookies
      used on another machine, and the account gets an alert naming the device whose
      cookies were copied (one per session and hour).

    In every refused case the request is signed out and the cookies are left as they are:
    clearing a thief's copy gains nothing, and clearing the device's own would end a
    session that nothing is wrong with (its next renewal needs the refresh cookie).
    """

    def access_token_of_this_session(grace: timedelta) -> SignedIn | None:
        if not access_token:
            return None
        try:
            signed_in = sessions.authenticate(db.engine, access_token, policy=policy, now=now - grace)
        except (InvalidToken, sessions.SignedOut):
            return None
        return signed_in if signed_in.session_id == bound.session_id else None

    late = access_token_of_this_session(device_binding.IN_FLIGHT_LEEWAY)
    if late is not None:
        auth.authenticated(late)
        return
    auth.signed_out_leaving_cookies()
    if (
        not device_binding.in_bound_scope(request.path)
        or access_token_of_this_session(ALARM_AFTER)
        or device_binding.renewal_skipped(request.headers.get("Secure-Session-Skipped", ""), bound.session_id)
    ):
        return
    with unit_of_work(db.session):
        record_copied_sign_in_refused(
            db.session,
            user_id=bound.user_id,
            session_id=bound.session_id,
            bound_device=bound.bound_device,
            used_from=current_device(),
            now=now,
        )


def login_required(view):
    """Let signed-in requests through; send others to sign in (pages) or 401 (JSON)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        auth = current_auth()
        if auth.signed_in is not None:
            return view(*args, **kwargs)
        if auth.bearer_error is not None:
            response = error_response(401, "The access token is invalid or has expired.", code=auth.bearer_error)
            response.headers["WWW-Authenticate"] = f'Bearer error="{auth.bearer_error}"'
            return response
        if wants_json():
            if auth.refresh_rejected:
                # The reason's name too: the page's notice links to the sign-in page with
                # it (`?why=`), which then says the same (auth/views.py).
                message, _ = sign_out_message(auth.sign_out_reason)
                reason = {"reason": auth.sign_out_reason.value} if auth.sign_out_reason else {}
                return error_response(401, message, code="session_expired", **reason)
            return error_response(401, "Sign in first.", code="not_signed_in")
        # A browser that was just signed out has been told why (authenticate_request).
        return redirect(url_for("auth.login", next=request_path_with_query()))

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
