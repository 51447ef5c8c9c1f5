"""The signed-in user's own pages: the profile, their devices (sessions), the password."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for

from .. import accounts, sessions
from ..auth.hooks import current_device, current_policy, current_time, login_required
from ..auth.ratelimit import limit_sign_in, note_failed_sign_in
from ..auth.request_auth import current_auth
from ..auth.views import signed_out_response
from ..database import unit_of_work
from ..devices import device_words, exact_time, relative_time
from ..extensions import db
from ..security_events import EventKind, list_security_events
from .events import event_label, is_alarming
from .forms import PasswordChangeForm

bp = Blueprint("account", __name__, url_prefix="/account")

SECURITY_EVENTS_SHOWN = 20


@dataclass(frozen=True)
class Moment:
    """A time as the page shows it: words, and the exact UTC time for a `title`."""

    words: str
    exact: str
    iso: str

    @classmethod
    def of(cls, moment: datetime, now: datetime) -> Moment:
        return cls(words=relative_time(moment, now=now), exact=exact_time(moment), iso=moment.isoformat())


@dataclass(frozen=True)
class DeviceRow:
    session_id: str
    device: str
    ip_address: str
    signed_in: Moment
    last_active: Moment
    current: bool


@dataclass(frozen=True)
class EventRow:
    label: str
    alarming: bool
    at: Moment
    device: str
    ip_address: str
    detail: str | None


@bp.get("")
@login_required
def profile():
    return render_template("account/profile.html")


@bp.get("/sessions", endpoint="sessions")
@login_required
def session_list():
    me, now = current_auth().signed_in, current_time()
    rows = [
        DeviceRow(
            session_id=session.public_id,
            device=device_words(session.user_agent, client_name=session.client_name),
            ip_address=session.ip_address,
            signed_in=Moment.of(session.created_at, now),
            last_active=Moment.of(session.last_active_at, now),
            current=session.public_id == me.session_id,
        )
        for session in sessions.list_active_sessions(db.session, user_id=me.user_id, now=now)
    ]
    # This device first: it is the one a person looks for.
    rows.sort(key=lambda row: not row.current)
    events = [
        EventRow(
            label=event_label(event.kind),
            alarming=is_alarming(event.kind),
            at=Moment.of(event.created_at, now),
            device=device_words(event.user_agent, client_name=event.client_name),
            ip_address=event.ip_address,
            detail=event.detail,
        )
        for event in list_security_events(db.session, user_id=me.user_id, limit=SECURITY_EVENTS_SHOWN)
    ]
    return render_template(
        "account/sessions.html",
        rows=rows,
        events=events,
        alarms=[event for event in events if event.alarming],
    )


@bp.post("/sessions/<session_id>/revoke")
@login_required
def revoke(session_id: str):
    me = current_auth().signed_in
    current = session_id == me.session_id
    with unit_of_work(db.session):
        ended = sessions.revoke_session(
            db.session,
            session_id,
            user_id=me.user_id,
            now=current_time(),
            reason="signed_out" if current else "revoked_by_user",
            event=EventKind.SIGNED_OUT if current else EventKind.SESSION_REVOKED,
            device=current_device(),
        )
    if not ended:
        # The same answer whether the session is someone else's, ended, or never existed.
        abort(404)
    if current:
        return signed_out_response("You have signed out.")
    flash("That device has been signed out. Its next request will go to the sign-in page.", "success")
    return redirect(url_for("account.sessions"))


@bp.post("/sessions/revoke-others")
@login_required
def revoke_others():
    me = current_auth().signed_in
    with unit_of_work(db.session):
        ended = sessions.revoke_other_sessions(
            db.session, user_id=me.user_id, keep_session_id=me.session_id, now=current_time(), device=current_device()
        )
    if ended:
        flash(f"Signed out {ended} other device{'s' if ended != 1 else ''}.", "success")
    else:
        flash("No other device was signed in.", "info")
    return redirect(url_for("account.sessions"))


@bp.route("/password", methods=["GET", "POST"])
@limit_sign_in
@login_required
def password():
    form = PasswordChangeForm()
    if form.validate_on_submit():
        me = current_auth().signed_in
        try:
            # The new password, its event, the end of every other session and this
            # session's fresh tokens: one transaction.
            with unit_of_work(db.session):
                issued = accounts.change_password(
                    db.session,
                    user_id=me.user_id,
                    session_id=me.session_id,
                    current_password=form.current_password.data,
                    new_password=form.new_password.data,
                    rounds=current_app.config["BCRYPT_ROUNDS"],
                    policy=current_policy(),
                    now=current_time(),
                    device=current_device(),
                )
        except accounts.WrongPassword:
            # Guessing through a hijacked session counts against the sign-in limits.
            note_failed_sign_in()
            form.current_password.errors.append("That is not your current password.")
        except sessions.SessionInactive:
            return signed_out_response("Your session has ended. Please sign in again.")
        else:
            current_auth().sign_in(issued)
            flash("Your password has been changed and every other device has been signed out.", "success")
            return redirect(url_for("account.sessions"))
    return render_template("account/password.html", form=form)
