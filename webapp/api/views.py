"""JSON endpoints under /api/: 401 JSON instead of a redirect when signed out."""

from datetime import datetime, timezone

from flask import Blueprint, g, jsonify, request

from .. import sessions, tokens
from ..account.events import event_label, is_alarming
from ..auth import cookies
from ..auth.hooks import current_policy, current_time, is_bearer_request, login_required
from ..devices import device_words
from ..extensions import db

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/me")
@login_required
def me():
    return jsonify(email=g.signed_in.email, session_id=g.signed_in.session_id)


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def access_token_expires_at(now: datetime) -> datetime | None:
    """When this request's access token expires: the one just issued by a rotation, or
    the one the client sent (already verified by the before-request hook)."""
    if g.issued_tokens is not None:
        return g.issued_tokens.access_expires_at
    if is_bearer_request():
        token = request.headers["Authorization"].partition(" ")[2].strip()
    else:
        token = request.cookies.get(cookies.access_cookie_name())
    if not token:
        return None
    policy = current_policy()
    try:
        claims = tokens.decode_access_token(
            token, keys=policy.keys, now=int(now.timestamp()), issuer=policy.issuer, audience=policy.audience
        )
    except tokens.AccessTokenExpired:
        return now  # valid when the hook checked it a moment ago, expired since
    except tokens.InvalidToken:
        return None
    return datetime.fromtimestamp(claims.expires_at, timezone.utc)


@bp.get("/session")
@login_required
def current_session():
    """This session's times, so a page can show when it ends. `now` lets the page
    count down against the server's clock rather than its own."""
    now = current_time()
    try:
        times = sessions.session_times(db.session, g.signed_in.session_id, user_id=g.signed_in.user_id, now=now)
    except sessions.SessionInactive:
        return jsonify(error="session_expired"), 401
    return jsonify(
        session_id=times.session_id,
        now=isoformat(now),
        created_at=isoformat(times.created_at),
        last_active_at=isoformat(times.last_active_at),
        access_expires_at=isoformat(access_token_expires_at(now)),
        idle_expires_at=isoformat(times.idle_expires_at),
        expires_at=isoformat(times.expires_at),
        persistent=times.persistent,
    )


@bp.get("/security-events")
@login_required
def security_events():
    """The user's 20 most recent security events, newest first."""
    events = sessions.list_security_events(db.session, user_id=g.signed_in.user_id, limit=20)
    return jsonify(
        events=[
            {
                "kind": event.kind,
                "label": event_label(event.kind),
                "alarming": is_alarming(event.kind),
                "created_at": isoformat(event.created_at),
                "ip_address": event.ip_address,
                "device": device_words(event.user_agent, client_name=event.client_name),
                "this_session": event.session_public_id == g.signed_in.session_id,
                "detail": event.detail,
            }
            for event in events
        ]
    )
