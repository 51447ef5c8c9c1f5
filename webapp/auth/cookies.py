"""The only place the auth cookies are set or cleared.

Handlers schedule what should happen (`schedule_set`, `schedule_clear`) and one
after-request step writes it, so each response carries at most one decision and a
response that clears the cookies can never set them again afterwards.
"""

from __future__ import annotations

from flask import Response, current_app, g

from ..sessions import IssuedTokens, seconds_until

_CLEAR = "clear"


def access_cookie_name() -> str:
    return "__Host-access_token" if current_app.config["COOKIE_SECURE"] else "access_token"


def refresh_cookie_name() -> str:
    return "__Host-refresh_token" if current_app.config["COOKIE_SECURE"] else "refresh_token"


def schedule_set(issued: IssuedTokens) -> None:
    if g.get("auth_cookies") != _CLEAR:
        g.auth_cookies = issued


def schedule_clear() -> None:
    g.auth_cookies = _CLEAR


def _attributes() -> dict:
    # No Domain: the cookies stay on this exact host, which `__Host-` requires anyway.
    return {
        "path": "/",
        "secure": current_app.config["COOKIE_SECURE"],
        "httponly": True,
        "samesite": current_app.config["COOKIE_SAMESITE"],
    }


def write_auth_cookies(response: Response) -> Response:
    action = g.get("auth_cookies")
    if action is None:
        return response
    attributes = _attributes()
    if action == _CLEAR:
        response.delete_cookie(access_cookie_name(), **attributes)
        response.delete_cookie(refresh_cookie_name(), **attributes)
        return response
    now = current_app.config["CLOCK"]()
    response.set_cookie(
        access_cookie_name(),
        action.access_token,
        max_age=seconds_until(action.access_expires_at, now),
        **attributes,
    )
    # Without "remember me" the refresh cookie ends with the browser session.
    refresh_max_age = seconds_until(action.refresh_expires_at, now) if action.persistent else None
    response.set_cookie(refresh_cookie_name(), action.refresh_token, max_age=refresh_max_age, **attributes)
    return response
