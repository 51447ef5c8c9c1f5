"""CSRF: the whole policy in one place.

Flask-WTF checks the token of every form and of every script's `X-CSRFToken` header,
except on requests that carry no ambient credential to forge one with: bearer requests
and the JSON token endpoints read no cookie. The token is bound to Flask's own session
cookie and renewed at every sign-in.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request
from flask import session as flask_session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from ..extensions import csrf
from .cookies import has_auth_cookies
from .request_auth import is_bearer_request, is_token_endpoint


def init_app(app: Flask) -> None:
    app.config.update(
        # Checked by `protect_from_csrf` in the request pipeline, not by Flask-WTF's own
        # hook, which would run before we know whether a request is a bearer request.
        WTF_CSRF_CHECK_DEFAULT=False,
        # No timer: the token lives as long as the Flask session (renewed at sign-in), so
        # a sessions page left open all day still works.
        WTF_CSRF_TIME_LIMIT=None,
        # Flask-WTF signs with SECRET_KEY alone; itsdangerous takes a list, oldest first,
        # signing with the last: a page opened before a secret rotation keeps working.
        WTF_CSRF_SECRET_KEY=[*app.config["SECRET_KEY_FALLBACKS"], app.config["SECRET_KEY"]],
    )
    csrf.init_app(app)
    app.session_interface = SessionCookieWithOneSigner()


class SessionCookieWithOneSigner(SecureCookieSessionInterface):
    """Flask's signed session cookie (it holds the CSRF secret, so every signed-in page
    reads it), with its serializer made once per secret rather than on every request."""

    _keys: tuple | None = None
    _serializer: URLSafeTimedSerializer | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"]))
        if keys != self._keys:
            # Two threads may both build it once: the same serializer, which holds no state.
            self._serializer, self._keys = super().get_signing_serializer(app), keys
        return self._serializer


def is_exempt() -> bool:
    """Requests that read no cookie credential cannot be forged with one. Nor can a
    sign-out from a browser without auth cookies: it ends nothing (a second tab, after
    the first signed out, is told it is already signed out rather than "form expired")."""
    return (
        is_bearer_request()
        or is_token_endpoint()
        or (request.endpoint == "auth.logout" and not has_auth_cookies())
        # The browser itself sends these, with no page: a proof signed by the device's
        # key over our challenge stands in for the CSRF token.
        or request.endpoint in ("dbsc.register", "dbsc.refresh")
    )


def protect_from_csrf() -> None:
    """Before every request: Flask-WTF's check (400 on failure), unless exempt."""
    config = current_app.config
    # GET and HEAD change nothing: no check (Flask-WTF would skip them too, after ours).
    if request.method not in config["WTF_CSRF_METHODS"] or not config["WTF_CSRF_ENABLED"] or is_exempt():
        return
    # With exemptions applied Flask-WTF also skips requests that match no route: a POST
    # to a page that does not exist is a 404, not a CSRF failure.
    csrf.protect(apply_exemptions=True)


def renew_csrf_secret() -> None:
    """A new CSRF secret at every sign-in, as Django's `cycle_key` does: a token planted
    in the browser before sign-in is worthless after it."""
    flask_session.pop("csrf_token", None)
    g.pop("csrf_token", None)
