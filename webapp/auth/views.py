"""Register, sign in, sign out, and the explicit refresh for scripts in pages."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for

from .. import accounts, pruning, sessions
from ..extensions import db
from ..sessions import EventKind
from . import cookies
from .forms import LoginForm, RegisterForm
from .hooks import (
    authenticate_request,
    current_device,
    current_policy,
    current_time,
    protect_from_csrf,
    rotate_from_cookie,
    safe_next_url,
)
from .ratelimit import limit_sign_in, note_failed_sign_in, refund_attempt_that_did_not_fail

bp = Blueprint("auth", __name__, url_prefix="/auth")
# CSRF before authentication: a forged POST is refused before it can rotate anything.
bp.before_app_request(protect_from_csrf)
bp.before_app_request(authenticate_request)
bp.after_app_request(cookies.write_auth_cookies)
bp.after_app_request(refund_attempt_that_did_not_fail)

GENERIC_SIGN_IN_ERROR = "Incorrect email or password."


def renew_csrf_secret() -> None:
    """A new CSRF secret at every sign-in, as Django's `cycle_key` does: a token planted
    in the browser before sign-in is worthless after it."""
    session.pop("csrf_token", None)
    g.pop("csrf_token", None)


def start_session_for(user, *, persistent: bool) -> None:
    now = current_time()
    issued = sessions.start_session(
        db.session, user, policy=current_policy(), now=now, device=current_device(), persistent=persistent
    )
    pruning.prune_if_due(now)
    renew_csrf_secret()
    g.signed_in = issued.signed_in
    cookies.schedule_set(issued)


@bp.route("/register", methods=["GET", "POST"])
@limit_sign_in
def register():
    if g.signed_in is not None:
        return redirect(url_for("account.profile"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_user(
                db.session,
                form.email.data,
                form.password.data,
                rounds=current_app.config["BCRYPT_ROUNDS"],
                now=current_time(),
            )
        except accounts.EmailTaken:
            # Each answer tells whether an address has an account: the per-IP sign-in
            # limit bounds how many addresses one client can try.
            note_failed_sign_in()
            form.email.errors.append("An account with this email already exists. Sign in instead.")
        else:
            start_session_for(user, persistent=False)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("account.profile"))
    # A form with errors is re-rendered with a message per field, as Flask apps do (200).
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@limit_sign_in
def login():
    next_url = safe_next_url(request.args.get("next"), url_for("account.profile"))
    if g.signed_in is not None:
        return redirect(next_url)
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.check_credentials(
            db.session, form.email.data, form.password.data, rounds=current_app.config["BCRYPT_ROUNDS"]
        )
        if user is None:
            note_failed_sign_in()
            form.password.errors.append(GENERIC_SIGN_IN_ERROR)
        else:
            start_session_for(user, persistent=form.remember.data)
            return redirect(next_url)
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout():
    if g.signed_in is not None:
        sessions.revoke_session(
            db.session,
            g.signed_in.session_id,
            user_id=g.signed_in.user_id,
            now=current_time(),
            reason="signed_out",
            event=EventKind.SIGNED_OUT,
            device=current_device(),
        )
    return signed_out_response("You have signed out.")


def signed_out_response(message: str):
    """Clear this browser's cookies and cached pages, then go to the sign-in page."""
    cookies.schedule_clear()
    g.signed_in = None
    session.clear()
    flash(message, "info")
    response = redirect(url_for("auth.login"))
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


@bp.post("/refresh")
def refresh():
    """Explicit rotation for scripts in pages (CSRF header required): 204 or 401 JSON."""
    if g.issued_tokens is not None:
        # The before-request hook already rotated this very request.
        return "", 204
    refresh_token = request.cookies.get(cookies.refresh_cookie_name())
    if not refresh_token or g.refresh_rejected:
        return jsonify(error="session_expired"), 401
    if rotate_from_cookie(refresh_token, policy=current_policy(), now=current_time()) is None:
        return jsonify(error="session_expired"), 401
    return "", 204
