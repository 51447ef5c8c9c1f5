"""The forgot-password form, the reset link's page and the "Not you?" link's page."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from flask import session as flask_session

from .. import accounts, notices, recovery
from ..auth.cookies import has_auth_cookies
from ..auth.hooks import current_device, current_time
from ..auth.ratelimit import reset_request_may_email
from ..auth.request_auth import current_auth
from ..database import unit_of_work
from ..extensions import db
from ..mail import EmailKind, can_send_email, public_link, send_decoy, send_email
from ..recovery import InvalidLink, LinkPurpose
from .forms import ForgotPasswordForm, ResetPasswordForm, SecureAccountForm

bp = Blueprint("reset", __name__, url_prefix="/auth")


# A link's token is in its address, which a browser keeps in its history and sends on
# as a Referer. So the address with the token only checks it, hands it to this browser's
# session and redirects to an address without it (as Django does); that page takes it
# out of the session at once and carries it in its form. The form pages then send the
# usual same-origin Referer, which the CSRF check wants over HTTPS, and the token never
# stays in a cookie, where a copy of the cookie jar would find it.
SET_PASSWORD = "set-password"
CONFIRM = "confirm"
_STASH = {LinkPurpose.RESET: "reset_link", LinkPurpose.SECURE: "secure_link"}
# Each link's form page: its endpoint, and the address (in place of a token) it has there.
_FORM_PAGE = {
    LinkPurpose.RESET: ("reset.reset_password", SET_PASSWORD),
    LinkPurpose.SECURE: ("reset.secure_account", CONFIRM),
}


@bp.after_request
def never_cached(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_form_page(purpose: LinkPurpose, token: str):
    """Hand `token` to the browser's session and send it to the link's form page."""
    flask_session[_STASH[purpose]] = token
    endpoint, placeholder = _FORM_PAGE[purpose]
    response = redirect(url_for(endpoint, token=placeholder), code=303)
    # No Referer with the token in it, even to our own next page.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _open_link(purpose: LinkPurpose, token: str):
    """The link's own address: a live link goes on to its form page."""
    try:
        recovery.user_for_link(db.session, token, purpose, policy=_policy(), now=current_time())
    except InvalidLink:
        return link_not_working(purpose)
    return _to_form_page(purpose, token)


def _live_link(purpose: LinkPurpose, form):
    """On the form page: the token of the link being used and its user. On the form's
    first showing the token is taken out of the session (where the link's address put
    it), on a submission read from the form. Raises `InvalidLink`."""
    if request.method == "GET":
        form.link.data = flask_session.pop(_STASH[purpose], None)
    token = form.link.data
    if not isinstance(token, str) or not token:
        raise InvalidLink()
    return token, recovery.user_for_link(db.session, token, purpose, policy=_policy(), now=current_time())


def _policy() -> recovery.RecoveryPolicy:
    return current_app.extensions["recovery_policy"]


# Shaped like a link's token, to render a decoy email of the same length.
DECOY_TOKEN = "1." + "0" * 6 + "." + "A" * 43


def duration_words(duration: timedelta) -> str:
    """'1 hour', '30 minutes', '7 days': how long a link works, for a person."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def reset_link_for(user) -> str:
    token = recovery.make_link_token(user, LinkPurpose.RESET, policy=_policy(), now=current_time())
    return public_link("reset.reset_password", token=token)


@bp.route("/forgot", methods=["GET", "POST"])
def forgot():
    if not can_send_email():
        # Production without MAIL_SERVER: say so, rather than promise an email.
        return render_template("auth/forgot_unavailable.html")
    form = ForgotPasswordForm()
    valid_for = duration_words(_policy().reset_ttl)
    if form.validate_on_submit():
        # Both answers do the same work here, known address or not: one query. Rendering
        # and sending happen after the response (webapp/mail.py).
        may_email = reset_request_may_email(form.email.data)
        user = accounts.find_user(db.session, form.email.data)
        if may_email and user is not None and user.disabled_at is None:
            send_email(
                EmailKind.PASSWORD_RESET, to=user.email, user_id=user.id, link=reset_link_for(user), valid_for=valid_for
            )
        else:
            # The same rendering, sent nowhere: the outbox thread shares this process's
            # CPU, and the requests after this one must not tell the two answers apart.
            send_decoy(
                EmailKind.PASSWORD_RESET,
                link=public_link("reset.reset_password", token=DECOY_TOKEN),
                valid_for=valid_for,
            )
        return render_template(
            "auth/forgot_sent.html", email=accounts.normalize_email(form.email.data), valid_for=valid_for
        )
    return render_template("auth/forgot.html", form=form, valid_for=valid_for)


def link_not_working(purpose: LinkPurpose):
    flask_session.pop(_STASH[purpose], None)
    response = make_response(render_template("auth/link_invalid.html", purpose=purpose.name.lower()), 404)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def end_this_browsers_sign_in() -> None:
    """The session of this browser (if any) ended with all the others: clear its cookies
    now rather than on its next request."""
    if has_auth_cookies():
        current_auth().sign_out()
    flask_session.clear()


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    if token != SET_PASSWORD:
        return _open_link(LinkPurpose.RESET, token)
    form = ResetPasswordForm()
    try:
        token, user = _live_link(LinkPurpose.RESET, form)
    except InvalidLink:
        return link_not_working(LinkPurpose.RESET)
    if form.validate_on_submit():
        now = current_time()
        device = current_device()
        try:
            with unit_of_work(db.session):
                reset = recovery.reset_password(
                    db.session,
                    token,
                    form.new_password.data,
                    policy=_policy(),
                    rounds=current_app.config["BCRYPT_ROUNDS"],
                    now=now,
                    device=device,
                )
        except InvalidLink:
            # Another request used this link a moment ago.
            return link_not_working(LinkPurpose.RESET)
        notices.password_reset(reset, device=device, now=now)
        # Clears the stashed link too.
        end_this_browsers_sign_in()
        flash(
            "Your password has been reset and every device has been signed out. Sign in with your new password.",
            "success",
        )
        return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form, email=user.email)


@bp.route("/secure/<token>", methods=["GET", "POST"])
def secure_account(token: str):
    if token != CONFIRM:
        return _open_link(LinkPurpose.SECURE, token)
    form = SecureAccountForm()
    try:
        token, user = _live_link(LinkPurpose.SECURE, form)
    except InvalidLink:
        return link_not_working(LinkPurpose.SECURE)
    if form.validate_on_submit():
        try:
            with unit_of_work(db.session):
                secured = recovery.secure_account(
                    db.session, token, policy=_policy(), now=current_time(), device=current_device()
                )
        except InvalidLink:
            return link_not_working(LinkPurpose.SECURE)
        end_this_browsers_sign_in()
        ended = secured.devices_signed_out
        if ended:
            signed_out = f"{ended} device{'s were' if ended != 1 else ' was'} signed out"
        else:
            signed_out = "No device was signed in"
        flash(f"{signed_out} and your old password no longer works. Choose a new one now.", "success")
        return _to_form_page(LinkPurpose.RESET, secured.reset_token)
    return render_template("auth/secure.html", form=form, email=user.email)
