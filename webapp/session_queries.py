"""The SQL that runs on every signed-in request and every rotation, built once.

Each request's liveness check and the read that starts a rotation run through
`DBAPISelect`: on every request, even Core's per-call machinery costs several times the
indexed lookup itself (`make bench` measures it). The two writes are Core statements
on the table, compiled once and cached by SQLAlchemy.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.orm import Session as DbSession

from .dbapi_select import DBAPISelect
from .models import Session, User

sessions_table, users_table = Session.__table__, User.__table__

# A session row and its user's email and status, by public id: where a rotation starts.
SESSION_WITH_USER = (
    select(
        sessions_table.c.id,
        sessions_table.c.user_id,
        sessions_table.c.counter,
        sessions_table.c.delivered_counter,
        sessions_table.c.rotated_at,
        sessions_table.c.last_active_at,
        sessions_table.c.expires_at,
        sessions_table.c.idle_expires_at,
        sessions_table.c.revoked_at,
        sessions_table.c.persistent,
        sessions_table.c.revoked_reason,
        sessions_table.c.user_agent,
        sessions_table.c.ip_address,
        sessions_table.c.client_name,
        sessions_table.c.device_key,
        users_table.c.email,
        users_table.c.disabled_at,
    )
    .join(users_table, users_table.c.id == sessions_table.c.user_id)
    .where(sessions_table.c.public_id == bindparam("public_id"))
)

# The per-request check: is this session of this user still active? The conditions are
# in SQL so that only the one timestamp the caller needs comes back to be converted.
ACTIVE_SESSION = (
    select(
        sessions_table.c.id,
        sessions_table.c.counter,
        sessions_table.c.delivered_counter,
        sessions_table.c.last_active_at,
        sessions_table.c.client_name,
        sessions_table.c.device_bound_at,
        users_table.c.email,
    )
    .join(users_table, users_table.c.id == sessions_table.c.user_id)
    .where(
        sessions_table.c.public_id == bindparam("public_id"),
        sessions_table.c.user_id == bindparam("user_id"),
        sessions_table.c.revoked_at.is_(None),
        sessions_table.c.expires_at > bindparam("now"),
        sessions_table.c.idle_expires_at > bindparam("now"),
        users_table.c.disabled_at.is_(None),
    )
)

# When an active session started and ends, for the pages that show it.
SESSION_TIMES = select(
    sessions_table.c.created_at,
    sessions_table.c.last_active_at,
    sessions_table.c.rotated_at,
    sessions_table.c.idle_expires_at,
    sessions_table.c.expires_at,
    sessions_table.c.persistent,
).where(
    sessions_table.c.public_id == bindparam("public_id"),
    sessions_table.c.user_id == bindparam("user_id"),
    sessions_table.c.revoked_at.is_(None),
    sessions_table.c.expires_at > bindparam("now"),
    sessions_table.c.idle_expires_at > bindparam("now"),
)

# A device-bound session's key and rotation state, for a DBSC refresh (two requests per
# renewal: the challenge, then the signed answer).
BOUND_SESSION = (
    select(
        sessions_table.c.user_id,
        sessions_table.c.counter,
        sessions_table.c.rotated_at,
        sessions_table.c.device_key,
    )
    .join(users_table, users_table.c.id == sessions_table.c.user_id)
    .where(
        sessions_table.c.public_id == bindparam("public_id"),
        sessions_table.c.device_key.is_not(None),
        sessions_table.c.revoked_at.is_(None),
        sessions_table.c.expires_at > bindparam("now"),
        sessions_table.c.idle_expires_at > bindparam("now"),
        users_table.c.disabled_at.is_(None),
    )
)

# The compare-and-set of a rotation: it wins only if the counter is still the one read.
# Presenting the token for `counter` proves it was delivered.
ADVANCE_COUNTER = (
    update(sessions_table)
    .where(
        sessions_table.c.id == bindparam("pk"),
        sessions_table.c.counter == bindparam("counter"),
        sessions_table.c.revoked_at.is_(None),
    )
    .values(
        counter=bindparam("next_counter"),
        delivered_counter=bindparam("counter"),
        rotated_at=bindparam("now"),
        last_active_at=bindparam("now"),
        idle_expires_at=bindparam("idle_expires_at"),
    )
)

# The condition makes parallel requests of one session write once between them.
TOUCH = (
    update(sessions_table)
    .where(sessions_table.c.id == bindparam("pk"), sessions_table.c.last_active_at <= bindparam("not_since"))
    .values(last_active_at=bindparam("now"))
)

# A lost rotation is answered again: from now on it counts as delivered, and the page that
# fetches it gets a grace window of its own.
REDELIVER = (
    update(sessions_table)
    .where(
        sessions_table.c.id == bindparam("pk"),
        sessions_table.c.counter == bindparam("current"),
        sessions_table.c.delivered_counter < bindparam("current"),
    )
    .values(delivered_counter=bindparam("current"), rotated_at=bindparam("now"))
)

# A request carried the access token issued with `counter`: that rotation was delivered.
MARK_DELIVERED = (
    update(sessions_table)
    .where(sessions_table.c.id == bindparam("pk"), sessions_table.c.delivered_counter < bindparam("delivered"))
    .values(delivered_counter=bindparam("delivered"))
)

_session_with_user = DBAPISelect(SESSION_WITH_USER)
_active_session = DBAPISelect(ACTIVE_SESSION)
_bound_session = DBAPISelect(BOUND_SESSION)
_session_times = DBAPISelect(SESSION_TIMES)


def find_active_session(source: DbSession | Connection | Engine, *, session_id: str, user_id: int, now: datetime):
    """The row of `ACTIVE_SESSION` (pk, counters, last_active_at, client_name, whether it is
    bound to its device, email) for the
    active session `session_id` of `user_id`, or None. Given the engine, it runs on a
    connection checked out of the pool for this query alone: the fastest way, for the
    auth hook of every request. Reads only."""
    if not isinstance(source, (Engine, Connection)):
        source = source.connection()  # an ORM session, or Flask-SQLAlchemy's scoped one
    return _active_session.one_or_none(source, {"public_id": session_id, "user_id": user_id, "now": now})


def find_session_times(source: DbSession | Connection, *, session_id: str, user_id: int, now: datetime):
    """The row of `SESSION_TIMES` for the active session `session_id` of `user_id`, or
    None, read on `source`'s connection, in its transaction. Reads only."""
    if not isinstance(source, Connection):
        source = source.connection()  # an ORM session, or Flask-SQLAlchemy's scoped one
    return _session_times.one_or_none(source, {"public_id": session_id, "user_id": user_id, "now": now})


def find_bound_session(db_session: DbSession, *, session_id: str, now: datetime):
    """The row of `BOUND_SESSION` (user id, counter, rotated_at, device key) for the
    active, device-bound session `session_id`, or None. Reads only."""
    return _bound_session.one_or_none(db_session.connection(), {"public_id": session_id, "now": now})


def load_session_with_user(db_session: DbSession, session_id: str):
    """The row of `SESSION_WITH_USER` for `session_id` (live or not), or None, read on
    the ORM session's connection and in its transaction. Reads only."""
    return _session_with_user.one_or_none(db_session.connection(), {"public_id": session_id})


def advance_counter(db_session: DbSession, *, pk: int, counter: int, now: datetime, idle_expires_at: datetime) -> bool:
    """Move session `pk` from `counter` to `counter + 1` if nothing moved it first (and it
    is not revoked). Returns whether this call won. Writes; does not commit."""
    won = db_session.connection().execute(
        ADVANCE_COUNTER,
        {"pk": pk, "counter": counter, "next_counter": counter + 1, "now": now, "idle_expires_at": idle_expires_at},
    )
    return won.rowcount == 1


def touch(db_session: DbSession, *, pk: int, now: datetime, resolution: timedelta) -> bool:
    """Set session `pk`'s last-active time to `now` unless it moved within `resolution`.
    Returns whether a row was written. Writes; does not commit."""
    result = db_session.connection().execute(TOUCH, {"pk": pk, "not_since": now - resolution, "now": now})
    return result.rowcount == 1


def mark_delivered(db_session: DbSession, *, pk: int, counter: int) -> bool:
    """Record that the token for `counter` of session `pk` reached its holder, unless a
    later one already did. Returns whether a row was written. Writes; does not commit."""
    result = db_session.connection().execute(MARK_DELIVERED, {"pk": pk, "delivered": counter})
    return result.rowcount == 1


def redeliver(db_session: DbSession, *, pk: int, counter: int, now: datetime) -> bool:
    """Record that the lost rotation to `counter` of session `pk` is being answered again
    at `now`, unless a parallel request did it first. Returns whether this call did.
    Writes; does not commit."""
    result = db_session.connection().execute(REDELIVER, {"pk": pk, "current": counter, "now": now})
    return result.rowcount == 1
