"""JSON endpoints under /api/: 401 JSON instead of a redirect when signed out."""

from datetime import datetime, timezone

from flask import Blueprint, jsonify

from .. import sessions
from ..account.activity import event_explanation
from ..account.events import event_label, is_alarming
from ..auth.hooks import current_time, login_required
from ..auth.request_auth import current_auth
from ..devices import device_words
from ..errors import error_response
from ..extensions import db
from ..security_events import list_security_events

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/me")
@login_required
def me():
    signed_in = current_auth().signed_in
    return jsonify(email=signed_in.email, session_id=signed_in.session_id)


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


@bp.get("/session")
@login_required
def current_session():
    """This session's times, so a page can show when it ends. `now` lets the page
    count down against the server's clock rather than its own."""
    signed_in, now = current_auth().signed_in, current_time()
    try:
        times = sessions.session_times(db.session, signed_in.session_id, user_id=signed_in.user_id, now=now)
    except sessions.SessionInactive:
        return error_response(401, "Your session has expired. Please sign in again.", code="session_expired")
    return jsonify(
        session_id=times.session_id,
        now=isoformat(now),
        created_at=isoformat(times.created_at),
        last_active_at=isoformat(times.last_active_at),
        access_expires_at=isoformat(signed_in.access_expires_at),
        idle_expires_at=isoformat(times.idle_expires_at),
        expires_at=isoformat(times.expires_at),
        persistent=times.persistent,
        device_bound=signed_in.device_bound,
    )


@bp.get("/security-events")
@login_required
def security_events():
    """The user's 20 most recent security events, newest first."""
    signed_in = current_auth().signed_in
    events = list_security_events(db.session, user_id=signed_in.user_id, limit=20)
    return jsonify(
        events=[
            {
                "kind": event.kind,
                "label": event_label(event.kind),
                "alarming": is_alarming(event.kind),
                "created_at": isoformat(event.created_at),
                "ip_address": event.ip_address,
                "device": device_words(event.user_agent, client_name=event.client_name),
                "this_session": event.session_public_id == signed_in.session_id,
                "detail": event.detail,
                "explanation": event_explanation(event.kind),
            }
            for event in events
        ]
    )
