"""The signed-in user's own pages: the profile, their devices (sessions), the password."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from sqlalchemy import Connection

from .. import accounts, notices, sessions
from ..auth.hooks import current_device, current_policy, current_time, login_required
from ..auth.ratelimit import limit_password_confirmation, note_failed_sign_in
from ..auth.request_auth import current_auth
from ..auth.views import signed_out_response
from ..database import unit_of_work
from ..devices import device_kind, device_words, exact_time, relative_time, time_until
from ..extensions import db
from ..security_events import (
    EventKind,
    acknowledge_alerts,
    list_open_alerts,
    list_security_events,
)
from ..sessions import EndReason
from .activity import event_explanation
from .events import event_label, is_alarming
from .forms import PasswordChangeForm

bp = Blueprint("account", __name__, url_prefix="/account")

SECURITY_EVENTS_SHOWN = 20
# The account page shows the latest few; the devices page has the rest.
SECURITY_EVENTS_ON_PROFILE = 5


@dataclass(frozen=True)
class Moment:
    """A time as the page shows it: words ("3 minutes ago", "in 30 days") and the exact
    UTC time beside them, which static/js/local-times.js rewrites to the viewer's zone."""

    words: str
    exact: str
    iso: str

    @classmethod
    def of(cls, moment: datetime, now: datetime) -> Moment:
        return cls(words=relative_time(moment, now=now), exact=exact_time(moment), iso=moment.isoformat())

    @classmethod
    def ahead(cls, moment: datetime, now: datetime) -> Moment:
        return cls(words=time_until(moment, now=now), exact=exact_time(moment), iso=moment.isoformat())


@dataclass(frozen=True)
class DeviceRow:
    session_id: str
    device: str
    kind: str
    ip_address: str
    signed_in: Moment
    last_active: Moment
    current: bool
    device_bound: bool


@dataclass(frozen=True)
class AlertRow:
    """An open stolen-token alert: what happened to which device, and when."""

    event_id: int
    kind: str
    at: Moment
    device: str
    ip_address: str


@dataclass(frozen=True)
class EventRow:
    kind: str
    label: str
    explanation: str | None
    alarming: bool
    at: Moment
    device: str
    ip_address: str
    this_session: bool


def security_activity(
    user_id: int, session_id: str, now: datetime, *, limit: int, source: Connection | None = None
) -> list[EventRow]:
    """The user's latest security events as both pages list them, newest first (read on
    `source`, by default the request's ORM session)."""
    events = list_security_events(source or db.session, user_id=user_id, limit=limit)
    return event_rows(events, session_id=session_id, now=now)


def event_rows(events: Iterable, *, session_id: str | None, now: datetime) -> list[EventRow]:
    """Security events (anything with their attributes) as the pages list them."""
    return [
        EventRow(
            kind=event.kind,
            label=event_label(event.kind),
            explanation=event_explanation(event.kind),
            alarming=is_alarming(event.kind),
            at=Moment.of(event.created_at, now),
            device=device_words(event.user_agent, client_name=event.client_name),
            ip_address=event.ip_address,
            this_session=session_id is not None and event.session_public_id == session_id,
        )
        for event in events
    ]


@bp.get("")
@login_required
def profile():
    me, now = current_auth().signed_in, current_time()
    # Two reads and no writes, on one pooled connection: no ORM session to set up and
    # tear down on a page people open often.
    with db.engine.connect() as connection:
        try:
            times = sessions.session_times(connection, me.session_id, user_id=me.user_id, now=now)
        except sessions.SessionInactive:
            return signed_out_response("Your session has ended. Please sign in again.")
        events = security_activity(me.user_id, me.session_id, now, limit=SECURITY_EVENTS_ON_PROFILE, source=connection)
    device = current_device()
    return render_template(
        "account/profile.html",
        device=device_words(device.user_agent, client_name=device.client_name),
        device_kind=device_kind(device.user_agent, client_name=device.client_name),
        ip_address=device.ip_address,
        signed_in_at=Moment.of(times.created_at, now),
        idle_expires_at=Moment.ahead(times.idle_expires_at, now),
        expires_at=Moment.ahead(times.expires_at, now),
        persistent=times.persistent,
        events=events,
    )


@bp.get("/sessions", endpoint="sessions")
@login_required
def session_list():
    me, now = current_auth().signed_in, current_time()
    rows = [
        DeviceRow(
            session_id=session.public_id,
            device=device_words(session.user_agent, client_name=session.client_name),
            kind=device_kind(session.user_agent, client_name=session.client_name),
            ip_address=session.ip_address,
            signed_in=Moment.of(session.created_at, now),
            last_active=Moment.of(session.last_active_at, now),
            current=session.public_id == me.session_id,
            device_bound=session.device_bound_at is not None,
        )
        for session in sessions.list_active_sessions(db.session, user_id=me.user_id, now=now)
    ]
    # This device first: it is the one a person looks for.
    rows.sort(key=lambda row: not row.current)
    events = security_activity(me.user_id, me.session_id, now, limit=SECURITY_EVENTS_SHOWN)
    alerts = [
        AlertRow(
            event_id=event.id,
            kind=event.kind,
            at=Moment.of(event.created_at, now),
            device=device_words(event.user_agent, client_name=event.client_name),
            ip_address=event.ip_address,
        )
        for event in list_open_alerts(db.session, user_id=me.user_id)
    ]
    return render_template("account/sessions.html", rows=rows, events=events, alerts=alerts)


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
            reason=EndReason.SIGNED_OUT if current else EndReason.REVOKED_BY_USER,
            event=EventKind.SIGNED_OUT if current else EventKind.SESSION_REVOKED,
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
        ended = sessions.sign_out_other_devices(
            db.session, user_id=me.user_id, keep_session_id=me.session_id, now=current_time(), device=current_device()
        )
    if ended:
        flash(f"Signed out {ended} other device{'s' if ended != 1 else ''}.", "success")
    else:
        flash("No other device was signed in.", "info")
    return redirect(url_for("account.sessions"))


@bp.route("/password", methods=["GET", "POST"])
@limit_password_confirmation(PasswordChangeForm)
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
            notices.password_changed(user_id=me.user_id, email=me.email, device=current_device(), now=current_time())
            flash("Your password has been changed and every other device has been signed out.", "success")
            return redirect(url_for("account.sessions"))
    return render_template("account/password.html", form=form)


# Bounded: a larger number is no event id, and the databases refuse it in a query.
@bp.post("/alerts/<int(max=2147483647):event_id>/dismiss")
@login_required
def dismiss_alert(event_id: int):
    """ "This was me": the alert goes; the event stays in the activity list."""
    me = current_auth().signed_in
    with unit_of_work(db.session):
        dismissed = acknowledge_alerts(db.session, user_id=me.user_id, now=current_time(), event_id=event_id)
    if not dismissed:
        abort(404)  # not an open alert of this user
    flash("Thanks: the alert is gone. The event stays in your security activity.", "info")
    return redirect(url_for("account.sessions"))


@bp.post("/secure")
@login_required
def secure_account():
    """ "Secure my account": every other device is signed out now, the alerts are dealt
    with, and the next step is a new password (which ends this session's tokens too)."""
    me, now = current_auth().signed_in, current_time()
    with unit_of_work(db.session):
        ended = sessions.sign_out_other_devices(
            db.session, user_id=me.user_id, keep_session_id=me.session_id, now=now, device=current_device()
        )
        acknowledge_alerts(db.session, user_id=me.user_id, now=now)
    others = "Every other device has been signed out" if ended else "No other device was signed in"
    flash(f"{others}. Now choose a new password, so that nobody can sign in with the old one.", "success")
    return redirect(url_for("account.password"))
