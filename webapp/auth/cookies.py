"""The only place the auth cookies are set or cleared.

Handlers decide through the request's `RequestAuth` (`sign_in`, `sign_out`) and one
after-request step writes that decision, so each response carries at most one and a
response that clears the cookies can never set them again afterwards.
"""

from __future__ import annotations

from flask import Response, current_app, request

from ..sessions import seconds_until
from .request_auth import CookieAction, current_auth


def access_cookie_name() -> str:
    return "__Host-access_token" if current_app.config["COOKIE_SECURE"] else "access_token"


def refresh_cookie_name() -> str:
    return "__Host-refresh_token" if current_app.config["COOKIE_SECURE"] else "refresh_token"


def has_auth_cookies() -> bool:
    """Whether this request carries either auth cookie."""
    return access_cookie_name() in request.cookies or refresh_cookie_name() in request.cookies


def _attributes() -> dict:
    # No Domain: the cookies stay on this exact host, which `__Host-` requires anyway.
    return {
        "path": "/",
        "secure": current_app.config["COOKIE_SECURE"],
        "httponly": True,
        "samesite": current_app.config["COOKIE_SAMESITE"],
    }


def access_cookie_attributes() -> str:
    """The access cookie's attributes as a `Set-Cookie` header writes them, for the DBSC
    session description, which must name the bound cookie exactly."""
    attributes = _attributes()
    parts = [f"Path={attributes['path']}"]
    if attributes["secure"]:
        parts.append("Secure")
    parts += ["HttpOnly", f"SameSite={attributes['samesite']}"]
    return "; ".join(parts)


def write_auth_cookies(response: Response) -> Response:
    """After every request: carry out this request's cookie decision."""
    auth = current_auth()
    if auth.cookie_action is CookieAction.LEAVE:
        return response
    attributes = _attributes()
    if auth.cookie_action is CookieAction.CLEAR:
        response.delete_cookie(access_cookie_name(), **attributes)
        response.delete_cookie(refresh_cookie_name(), **attributes)
        return response
    issued, now = auth.issued, current_app.config["CLOCK"]()
    response.set_cookie(
        access_cookie_name(),
        issued.access_token,
        max_age=seconds_until(issued.access_expires_at, now),
        **attributes,
    )
    if not issued.new_refresh_token:
        # A grace answer: the browser keeps its refresh cookie (the parallel request
        # that rotated sets the new one, and must not be overwritten by an older one).
        return response
    # Without "remember me" the refresh cookie ends with the browser session.
    refresh_max_age = seconds_until(issued.refresh_expires_at, now) if issued.persistent else None
    response.set_cookie(refresh_cookie_name(), issued.refresh_token, max_age=refresh_max_age, **attributes)
    return response
