"""The security-event log: what a user should be able to see happened to their account.

Plain Python over the database, like the session engine. Every function here adds to
the caller's unit of work and never commits.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session as DbSession

from .dbapi_select import DBAPISelect
from .devices import Device
from .models import SecurityEvent

__all__ = [
    "ALERTS",
    "EventKind",
    "acknowledge_alerts",
    "devices_signed_out",
    "list_open_alerts",
    "list_security_events",
    "record_event",
    "record_copied_sign_in_refused",
    "record_sign_in_rate_limited",
]


class EventKind(enum.StrEnum):
    SIGNED_IN = "signed_in"
    SIGNED_OUT = "signed_out"
    SESSION_REVOKED = "session_revoked"
    OTHER_SESSIONS_REVOKED = "other_sessions_revoked"
    PASSWORD_CHANGED = "password_changed"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    SIGN_IN_RATE_LIMITED = "sign_in_rate_limited"
    SESSION_LIMIT_REACHED = "session_limit_reached"
    ACCOUNT_DISABLED = "account_disabled"
    ACCOUNT_ENABLED = "account_enabled"
    ALL_SESSIONS_REVOKED = "all_sessions_revoked"
    PASSWORD_RESET = "password_reset"
    SIGNED_OUT_EVERYWHERE = "signed_out_everywhere"
    COPIED_SIGN_IN_REFUSED = "copied_sign_in_refused"


def record_event(
    db_session: DbSession,
    *,
    user_id: int,
    kind: EventKind,
    now: datetime,
    device: Device = Device(),
    session_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Add a security event of `user_id` (about the session `session_id`, if any) to the
    unit of work. Writes; does not commit."""
    db_session.add(
        SecurityEvent(
            user_id=user_id,
            kind=str(kind),
            created_at=now,
            session_public_id=session_id,
            ip_address=device.ip_address[:64],
            user_agent=device.user_agent[:512],
            client_name=device.client_name,
            detail=detail,
        )
    )


# Events a person should act on: shown as alerts until acknowledged.
ALERTS = frozenset({EventKind.REFRESH_TOKEN_REUSED, EventKind.COPIED_SIGN_IN_REFUSED})

# A copied cookie jar is tried again and again: one alert per session and hour says it.
COPY_ALERT_INTERVAL = timedelta(hours=1)


def record_copied_sign_in_refused(
    db_session: DbSession,
    *,
    user_id: int,
    session_id: str,
    bound_device: Device,
    used_from: Device,
    now: datetime,
) -> bool:
    """The cookies of a session bound to its device were used without the device's key
    (a copied cookie jar): an alert naming that device, at most one per session and
    `COPY_ALERT_INTERVAL`. Returns whether it recorded one. Writes; does not commit."""
    recent = db_session.execute(
        select(SecurityEvent.id)
        .where(
            SecurityEvent.user_id == user_id,
            SecurityEvent.kind == str(EventKind.COPIED_SIGN_IN_REFUSED),
            SecurityEvent.session_public_id == session_id,
            SecurityEvent.created_at > now - COPY_ALERT_INTERVAL,
        )
        .limit(1)
    ).first()
    if recent is not None:
        return False
    record_event(
        db_session,
        user_id=user_id,
        kind=EventKind.COPIED_SIGN_IN_REFUSED,
        now=now,
        device=bound_device,
        session_id=session_id,
        detail=f"used from {used_from.ip_address or 'an unknown address'}"[:200],
    )
    return True


def list_open_alerts(db_session: DbSession, *, user_id: int, limit: int = 5) -> list[SecurityEvent]:
    """The user's alerts nobody has acknowledged yet, newest first. Reads only."""
    return list(
        db_session.execute(
            select(SecurityEvent)
            .where(
                SecurityEvent.user_id == user_id,
                SecurityEvent.kind.in_([str(kind) for kind in ALERTS]),
                SecurityEvent.acknowledged_at.is_(None),
            )
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc())
            .limit(limit)
        ).scalars()
    )


def acknowledge_alerts(db_session: DbSession, *, user_id: int, now: datetime, event_id: int | None = None) -> int:
    """Mark `user_id`'s open alert `event_id` (None: all of them) as dealt with. Returns
    how many were; 0 when that id is no open alert of this user. Writes; does not commit."""
    condition = [
        SecurityEvent.user_id == user_id,
        SecurityEvent.kind.in_([str(kind) for kind in ALERTS]),
        SecurityEvent.acknowledged_at.is_(None),
    ]
    if event_id is not None:
        condition.append(SecurityEvent.id == event_id)
    return db_session.execute(update(SecurityEvent).where(*condition).values(acknowledged_at=now)).rowcount


def devices_signed_out(count: int, *, other: bool = True) -> str:
    """An event's detail for `count` devices signed out, in words."""
    if count == 0:
        return "No other device was signed in" if other else "No device was signed in"
    noun = "device" if count == 1 else "devices"
    return f"{count} {'other ' if other else ''}{noun} signed out"


# The account page's list, on every visit to it: built once, run on the DB-API connection.
_events_table = SecurityEvent.__table__
_latest_events = DBAPISelect(
    select(_events_table)
    .where(_events_table.c.user_id == bindparam("user_id"))
    .order_by(_events_table.c.created_at.desc(), _events_table.c.id.desc())
    .limit(bindparam("limit"))
)


def list_security_events(source: DbSession | Connection, *, user_id: int, limit: int = 20) -> list:
    """The user's most recent security events, newest first, as rows with the attributes
    of `SecurityEvent`, read on an ORM session or a connection. Reads only."""
    if not isinstance(source, Connection):
        source = source.connection()  # an ORM session, or Flask-SQLAlchemy's scoped one
    return _latest_events.all(source, {"user_id": user_id, "limit": limit})


def record_sign_in_rate_limited(
    db_session: DbSession,
    *,
    user_id: int,
    now: datetime,
    device: Device = Device(),
    detail: str | None = None,
    quiet_period: timedelta = timedelta(minutes=15),
) -> bool:
    """Record that sign-in to `user_id` was refused for too many attempts, unless such an
    event was recorded within `quiet_period`: an attacker hammering a locked account
    must not be able to flood its activity list (or the table). Returns whether an
    event was added. Writes; does not commit."""
    recent = db_session.execute(
        select(SecurityEvent.id)
        .where(
            SecurityEvent.user_id == user_id,
            SecurityEvent.kind == str(EventKind.SIGN_IN_RATE_LIMITED),
            SecurityEvent.created_at > now - quiet_period,
        )
        .limit(1)
    ).first()
    if recent is not None:
        return False
    kind = EventKind.SIGN_IN_RATE_LIMITED
    record_event(db_session, user_id=user_id, kind=kind, now=now, device=device, detail=detail)
    return True
