"""Register, sign in, sign out, and the explicit refresh for scripts in pages."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask import session as flask_session

from .. import accounts, notices, retention, sessions
from ..database import unit_of_work
from ..errors import error_response
from ..extensions import db
from ..metrics import SignInOutcome, current_metrics
from ..models import User
from ..sessions import EndReason, IssuedTokens
from . import cookies
from .csrf import renew_csrf_secret
from .device_cookie import device_nonce, remember_device
from .forms import LoginForm, RegisterForm
from .hooks import (
    current_device,
    current_policy,
    current_time,
    rotate_from_cookie,
    safe_next_url,
    sign_out_message,
)
from .ratelimit import note_failed_sign_in, sign_in_attempt
from .request_auth import current_auth

bp = Blueprint("auth", __name__, url_prefix="/auth")

GENERIC_SIGN_IN_ERROR = "Incorrect email or password."


def start_session_for(user: User, *, persistent: bool) -> IssuedTokens:
    """A new session for this browser, in the caller's unit of work."""
    return sessions.start_session(
        db.session, user, policy=current_policy(), now=current_time(), device=current_device(), persistent=persistent
    )


def signed_in_as(issued: IssuedTokens) -> None:
    """After the sign-in committed: this browser's cookies, a new CSRF secret, and
    some housekeeping."""
    renew_csrf_secret()
    current_auth().sign_in(issued)
    retention.prune_if_due(
        db.session,
        current_app.extensions["retention_policy"],
        current_app.extensions["prune_schedule"],
        now=current_time(),
    )


@bp.route("/register", methods=["GET", "POST"])
def register():
    if current_auth().signed_in is not None:
        return redirect(url_for("account.profile"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            # Counted once the form is valid, and against no account (auth/ratelimit.py):
            # trying an address that has one must not lock its owner out.
            with sign_in_attempt(None), unit_of_work(db.session):
                user = accounts.create_user(
                    db.session,
                    form.email.data,
                    form.password.data,
                    rounds=current_app.config["BCRYPT_ROUNDS"],
                    now=current_time(),
                )
                issued = start_session_for(user, persistent=False)
        except accounts.EmailTaken:
            # Each answer tells whether an address has an account: the per-IP sign-in
            # limit bounds how many addresses one client can try.
            note_failed_sign_in()
            form.email.errors.append("An account with this email already exists. Sign in instead.")
        else:
            signed_in_as(issued)
            remember_device(user.email)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("account.profile"))
    # A form with errors is re-rendered with a message per field, as Flask apps do (200).
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next_url(request.args.get("next"), url_for("account.profile"))
    if current_auth().signed_in is not None:
        return redirect(next_url)
    if request.method == "GET":
        say_why_signed_out(request.args.get("why"))
    form = LoginForm()
    if form.validate_on_submit():
        # Counted once the form is valid (auth/ratelimit.py): a 429 or a 503 from here.
        with sign_in_attempt(form.email.data, starts_session=True):
            user = accounts.check_credentials(
                db.session, form.email.data, form.password.data, rounds=current_app.config["BCRYPT_ROUNDS"]
            )
        if user is None:
            note_failed_sign_in()
            current_metrics().sign_in(SignInOutcome.FAILED)
            form.password.errors.append(GENERIC_SIGN_IN_ERROR)
            return render_template("auth/login.html", form=form)
        # A browser without this account's device cookie has not signed in to it
        # before (or has cleared its cookies): its owner hears about it.
        new_device = device_nonce(user.email) is None
        try:
            with unit_of_work(db.session):
                issued = start_session_for(user, persistent=form.remember.data)
        except sessions.CredentialsChanged:
            # The password was reset (or the account disabled) while it was checked.
            form.password.errors.append(GENERIC_SIGN_IN_ERROR)
        else:
            signed_in_as(issued)
            remember_device(user.email)
            if new_device:
                notices.new_sign_in(user, device=current_device(), now=current_time())
            return redirect(next_url)
    return render_template("auth/login.html", form=form)


def say_why_signed_out(why: str | None) -> None:
    """`?why=<reason>`: a page's script found this browser signed out and links here
    (static/js/session-fetch.js); say what it said. Only our own sentences, by name: a
    link from elsewhere can choose which of them, and nothing else."""
    try:
        reason = EndReason(why or "")
    except ValueError:
        return
    flash(*sign_out_message(reason))


@bp.post("/logout")
def logout():
    signed_in = current_auth().signed_in
    if signed_in is not None:
        with unit_of_work(db.session):
            sessions.revoke_session(db.session, signed_in.session_id, user_id=signed_in.user_id, now=current_time())
        return signed_out_response("You have signed out.")
    # Signed out already (in another tab, say): say so, not "this form has expired".
    # Nothing is cleared: without auth cookies this POST needed no CSRF token (csrf.py),
    # so another site could have sent it.
    flash("You are already signed out.", "info")
    return redirect(url_for("auth.login"))


def signed_out_response(message: str):
    """Clear this browser's cookies and cached pages, then go to the sign-in page."""
    current_auth().sign_out()
    flask_session.clear()
    flash(message, "info")
    response = redirect(url_for("auth.login"))
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


@bp.post("/refresh")
def refresh():
    """Explicit rotation for scripts in pages (CSRF header required): 204 or 401 JSON."""
    auth = current_auth()
    if auth.issued is not None:
        # The before-request hook already rotated this very request.
        return "", 204
    if auth.signed_in is not None and auth.signed_in.device_bound:
        # A device-bound session's access cookie is fresh: the browser renews it itself,
        # with the device's key, before it lets this request go (webapp/dbsc/views.py).
        return "", 204
    refresh_token = request.cookies.get(cookies.refresh_cookie_name())
    if not refresh_token or auth.refresh_rejected:
        return session_expired()
    if rotate_from_cookie(auth, refresh_token, policy=current_policy(), now=current_time()) is None:
        return session_expired()
    return "", 204


def session_expired():
    return error_response(401, "Your session has expired. Please sign in again.", code="session_expired")
