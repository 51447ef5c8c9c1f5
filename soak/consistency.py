"""After the load: every session in the private PostgreSQL, checked against itself and
against what the browsers did (webapp/models.py names the columns)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from .app_server import REFRESH_TOKEN_TTL, SESSION_MAX_AGE
from .observations import Observations

# Why a session may have ended in a soak, and what of the soak's explains it.
REASON_SIGNED_OUT = "signed_out"
REASON_REVOKED_BY_USER = "revoked_by_user"
REASON_REUSE = "reuse"
KNOWN_REASONS = {
    "signed_out",
    "revoked_by_user",
    "signed_out_by_user",
    "password_changed",
    "superseded",
    "reuse",
    "session_limit",
    "account_disabled",
    "signed_out_by_operator",
}
# A session's timestamps are each request's clock at its start, and a transaction commits
# later: a rotation that committed just before a revocation may carry a later time than
# the revocation's, by as much as the revoking request took. Beyond this, it is a session
# used after it ended.
ORDER_TOLERANCE = timedelta(seconds=10)
REUSE_EVENT = "refresh_token_reused"

SESSIONS_QUERY = """
SELECT public_id, user_id, counter, delivered_counter, created_at, rotated_at, last_active_at,
       expires_at, idle_expires_at, revoked_at, revoked_reason
FROM sessions ORDER BY id
"""
REUSE_EVENTS_QUERY = "SELECT session_public_id, count(*) FROM security_events WHERE kind = %s GROUP BY 1"


@dataclass(frozen=True)
class SessionRow:
    public_id: str
    user_id: int
    counter: int
    delivered_counter: int
    created_at: datetime
    rotated_at: datetime
    last_active_at: datetime
    expires_at: datetime
    idle_expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


@dataclass(frozen=True)
class Consistency:
    sessions: int
    active: int
    rotations: int  # the sum of every session's counter: each rotation adds one
    reasons: dict[str, int]
    reuse_sessions: frozenset[str]
    reuse_events: int  # refresh_token_reused security events
    ended_as: dict[str, str | None]  # each session's revoked_reason (None: still active)
    skewed: int  # sessions whose last use is dated (within the tolerance) after their end
    largest_skew_ms: float
    violations: tuple[str, ...]


def read_sessions(conninfo: str) -> tuple[list[SessionRow], dict[str, int]]:
    with psycopg.connect(conninfo) as connection:
        rows = [SessionRow(*row) for row in connection.execute(SESSIONS_QUERY)]
        events = {sid: count for sid, count in connection.execute(REUSE_EVENTS_QUERY, (REUSE_EVENT,))}
    return rows, events


def check_sessions(rows: list[SessionRow], reuse_events: dict[str, int], seen: Observations) -> Consistency:
    violations: list[str] = []
    skewed, largest_skew = 0, timedelta(0)
    logged_out = {r.session_id for r in seen.logouts if r.status in (302, 303) and r.session_id}
    revoked = {r.session_id for r in seen.revocations if r.done}
    replayed = {r.session_id for r in seen.replays}
    max_seen: dict[str, int] = {}
    for record in seen.session_counters:
        max_seen[record.session_id] = max(max_seen.get(record.session_id, -1), record.counter)

    for row in rows:
        name = f"session {row.public_id}"
        if row.counter < 0 or not (max(row.counter - 1, 0) <= row.delivered_counter <= row.counter):
            violations.append(f"{name}: counter {row.counter} with delivered_counter {row.delivered_counter}")
        if (row.revoked_at is None) != (row.revoked_reason is None):
            violations.append(f"{name}: revoked_at {row.revoked_at} but revoked_reason {row.revoked_reason!r}")
        if row.revoked_reason is not None and row.revoked_reason not in KNOWN_REASONS:
            violations.append(f"{name}: unknown revoked_reason {row.revoked_reason!r}")
        if row.rotated_at < row.created_at or row.last_active_at < row.created_at:
            violations.append(f"{name}: rotated or active before it was created")
        if row.expires_at != row.created_at + timedelta(seconds=SESSION_MAX_AGE):
            violations.append(f"{name}: expires_at moved ({row.expires_at}, created {row.created_at})")
        if not (
            row.created_at + timedelta(seconds=REFRESH_TOKEN_TTL)
            <= row.idle_expires_at
            <= row.rotated_at + timedelta(seconds=REFRESH_TOKEN_TTL)
        ):
            violations.append(f"{name}: idle_expires_at {row.idle_expires_at} out of step with rotated_at")
        if row.revoked_at is not None:
            used_last = max(row.rotated_at, row.last_active_at)
            if used_last - row.revoked_at > ORDER_TOLERANCE:
                violations.append(
                    f"{name}: used at {used_last.isoformat()}, after it ended at {row.revoked_at.isoformat()}"
                )
            elif used_last > row.revoked_at:
                skewed += 1
                largest_skew = max(largest_skew, used_last - row.revoked_at)
        explained = {
            None: True,
            REASON_SIGNED_OUT: row.public_id in logged_out,
            REASON_REVOKED_BY_USER: row.public_id in revoked,
            REASON_REUSE: row.public_id in replayed,
        }.get(row.revoked_reason, False)
        if not explained:
            violations.append(f"{name}: ended as {row.revoked_reason!r}, which nothing in the soak did")
        if row.revoked_reason == REASON_REUSE and reuse_events.get(row.public_id, 0) != 1:
            violations.append(f"{name}: {reuse_events.get(row.public_id, 0)} reuse events, not 1")
        if row.public_id in max_seen:
            held = max_seen[row.public_id]
            # One rotation may be the browser's without its knowing: its answer was lost
            # (a worker killed mid-request), to be sent again when the old token comes back.
            if not (held <= row.counter <= held + 1):
                violations.append(f"{name}: counter {row.counter}, but the browsers held counter {held}")
    for session_id in max_seen.keys() - {row.public_id for row in rows}:
        violations.append(f"session {session_id}: a browser held it, the database has no such session")

    return Consistency(
        sessions=len(rows),
        active=sum(1 for row in rows if row.revoked_at is None),
        rotations=sum(row.counter for row in rows),
        reasons=dict(Counter(row.revoked_reason or "active" for row in rows)),
        reuse_sessions=frozenset(row.public_id for row in rows if row.revoked_reason == REASON_REUSE),
        reuse_events=sum(reuse_events.values()),
        ended_as={row.public_id: row.revoked_reason for row in rows},
        skewed=skewed,
        largest_skew_ms=largest_skew.total_seconds() * 1000,
        violations=tuple(violations),
    )
