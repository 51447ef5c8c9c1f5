"""Signing people in: the request pipeline, the sign-in views, cookies and rate limits."""

from __future__ import annotations

from flask import Flask

from ..headers import set_security_headers
from . import cookies, csrf, hooks, ratelimit
from .request_auth import current_auth


def init_app(app: Flask) -> None:
    """Register everything that runs on every request, in the order it runs.

    Before the view (Flask runs these in the order they are registered):
      1. CSRF: a forged POST is refused before it can rotate a refresh token, end a
         session or count against anybody's sign-in budget.
      2. Authentication: signs the request in from a bearer token or the cookies,
         rotating silently when the access token has expired.
    In the view: the sign-in limits (auth/ratelimit.py), counted once the form or body
    is known to be valid, so a malformed request costs no key in the limit storage.
    After the view (Flask runs these in reverse order of registration, so they are
    registered here last step first):
      3. Sign-in limits: the places an attempt that did not fail took are given back.
      4. Cookie writing: carries out the request's one cookie decision; before it, the
         offer to bind a signed-in browser session to its device (webapp/dbsc/views.py).
      5. Security headers: last, once everything that can make a response personal
         (and so `no-store`) has happened.
    """
    from ..dbsc.views import offer_registration

    csrf.init_app(app)
    app.before_request(csrf.protect_from_csrf)
    # Timed, for operators (webapp/metrics.py: webapp_auth_hook_seconds).
    app.before_request(app.extensions["metrics"].auth_hook_seconds.time()(hooks.authenticate_request))
    app.after_request(set_security_headers)
    app.after_request(cookies.write_auth_cookies)
    app.after_request(offer_registration)
    ratelimit.init_app(app)
    # Templates show who is signed in as `signed_in`.
    app.context_processor(lambda: {"signed_in": current_auth().signed_in})
