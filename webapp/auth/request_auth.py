"""Who this request is, and what its response does with the auth cookies: one object
per request, `g.auth`, changed only through its methods.

The hook fills it in, views sign in or out through it, and the cookie writer and the
security headers read it. Its cookie decision is an enum with one rule: once a request
decided to clear the cookies, nothing later in it can set them again.
"""

from __future__ import annotations

import enum

from flask import g, request

from ..sessions import EndReason, IssuedTokens, SignedIn


class CookieAction(enum.Enum):
    LEAVE = "leave"  # the response does not touch the auth cookies
    SET = "set"  # the response sets both cookies to `RequestAuth.issued`
    CLEAR = "clear"  # the response deletes both cookies


class BearerError(enum.StrEnum):
    """RFC 6750's error codes, for `WWW-Authenticate: Bearer error="..."`."""

    INVALID_REQUEST = "invalid_request"
    INVALID_TOKEN = "invalid_token"


class RequestAuth:
    """The authentication state of one request."""

    def __init__(self) -> None:
        self.signed_in: SignedIn | None = None
        # Tokens made during this request (a sign-in or a rotation), for the cookies.
        self.issued: IssuedTokens | None = None
        self.cookie_action = CookieAction.LEAVE
        # A refresh token was presented and refused: the browser was signed out, and
        # (when its session had one) why.
        self.refresh_rejected = False
        self.sign_out_reason: EndReason | None = None
        self.bearer_error: BearerError | None = None
        # The places this request's sign-in attempt took in the failure budgets, and
        # whether its password (or email) check failed: if not, they are given back after
        # the request (auth/ratelimit.py).
        self.sign_in_places: list = []
        self.sign_in_failed = False

    def authenticated(self, signed_in: SignedIn) -> None:
        """Signed in by a valid access token: nothing for the cookies to do."""
        self.signed_in = signed_in

    def sign_in(self, issued: IssuedTokens) -> None:
        """Signed in with new tokens, which the response's cookies will carry (unless
        this request already decided to clear them)."""
        self.signed_in = issued.signed_in
        self.issued = issued
        if self.cookie_action is not CookieAction.CLEAR:
            self.cookie_action = CookieAction.SET

    def sign_out(self, *, refresh_rejected: bool = False, reason: EndReason | None = None) -> None:
        """Signed out: the response clears the cookies, whatever happens later."""
        self.signed_in = None
        self.issued = None
        self.cookie_action = CookieAction.CLEAR
        self.refresh_rejected = self.refresh_rejected or refresh_rejected
        self.sign_out_reason = reason or self.sign_out_reason

    def signed_out_leaving_cookies(self) -> None:
        """Signed out for this request only: the browser's cookies may already be newer
        than the ones this request carried (see `sessions.RefreshRejected.superseded`)."""
        self.signed_in = None
        self.issued = None

    def bearer_refused(self, error: BearerError) -> None:
        self.signed_in = None
        self.bearer_error = error

    @property
    def is_personal(self) -> bool:
        """Whether the response is for one user only (never to be cached)."""
        return self.signed_in is not None or self.cookie_action is not CookieAction.LEAVE


def current_auth() -> RequestAuth:
    """This request's `RequestAuth`, created on first use (an error page can be drawn
    before authentication ran, e.g. after a failed CSRF check)."""
    if "auth" not in g:
        g.auth = RequestAuth()
    return g.auth


def is_bearer_request() -> bool:
    """A request to /api/ with `Authorization: Bearer`: judged by that header alone."""
    # Only the Bearer scheme: a proxy's Basic auth in front of the app must not turn
    # browser requests into token requests.
    scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
    return scheme.lower() == "bearer" and request.path.startswith("/api/")


def is_token_endpoint() -> bool:
    """The JSON sign-in, refresh and revoke endpoints take credentials from the body only."""
    return request.path.startswith("/api/auth/")
