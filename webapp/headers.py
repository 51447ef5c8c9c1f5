"""Security headers on every response."""

from flask import Response, current_app

from .auth.request_auth import current_auth

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


# What every answer carries unless its view chose otherwise (a reset link's page sends
# no referrer at all, for one).
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
STRICT_TRANSPORT_SECURITY = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")


def set_security_headers(response: Response) -> Response:
    """After every request: the headers every page and answer of ours carries."""
    headers = response.headers
    # One pass over what the view set, rather than one per header (this runs on every request).
    already_set = {name.lower() for name in headers.keys()}
    for name, value in SECURITY_HEADERS:
        if name.lower() not in already_set:
            headers.add(name, value)
    if current_app.config["COOKIE_SECURE"] and "strict-transport-security" not in already_set:
        headers.add(*STRICT_TRANSPORT_SECURITY)
    # Whatever a signed-in request sees is for that user only: never cache it, so the
    # back button after sign-out shows nothing.
    if current_auth().is_personal:
        headers["Cache-Control"] = "no-store"
        if "vary" not in already_set:
            headers.add("Vary", "Cookie")
    return response
