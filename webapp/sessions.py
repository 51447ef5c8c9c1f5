"""The session engine: start, authenticate, rotate, revoke.

Plain Python over the database. It never touches `request`, `g` or cookies: callers pass
values (the time, the policy, who the client is) and get values back or an exception.
The web edge (`auth/hooks.py`, the views) and the CLI are thin adapters over it.

Lifecycle in one paragraph: a sign-in creates a session row with counter 0 and hands out
a refresh token for (session, 0) and a short access JWT. Rotation moves the counter from
n to n+1 with one compare-and-set UPDATE; the successor token is a pure function of
(session, n+1), so requests that race on one rotation all receive the same one. The
token for n is honoured for `reuse_grace` seconds after the rotation (parallel requests
of one page load) without writing anything; after that, or for any older counter, it is
a copy in the wrong hands and the whole session is revoked.
"""

from __future__ import annotations

import enum
import math
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session as DbSession

from . import tokens
from .models import SecurityEvent, Session, User
from .prepared import PreparedSelect
from .tokens import AccessTokenExpired, InvalidToken, KeyRing

__all__ = [
    "AccessTokenExpired",
    "Device",
    "EventKind",
    "IssuedTokens",
    "RefreshRejected",
    "RefreshTokenReused",
    "SessionInactive",
    "SessionPolicy",
    "SignedIn",
    "SignedOut",
    "authenticate",
    "record_event",
    "revoke_other_sessions",
    "revoke_session",
    "rotate_refresh_token",
    "start_session",
    "touch_session",
    "list_active_sessions",
    "list_security_events",
    "PruneSchedule",
    "prune_security_events",
    "prune_sessions",
    "record_sign_in_rate_limited",
    "renew_session_tokens",
    "seconds_until",
]

# Last-active is written at most this often per session: a write per request would make
# every page a write transaction.
LAST_ACTIVE_RESOLUTION = timedelta(seconds=60)


class SignedOut(Exception):
    """The credentials presented do not sign anybody in."""


class SessionInactive(SignedOut):
    """A genuine access token whose session was revoked, lapsed or whose user is disabled."""


class RefreshRejected(SignedOut):
    """The refresh token is forged, malformed, unknown, lapsed, revoked or from the future."""


class RefreshTokenReused(RefreshRejected):
    """A retired refresh token came back: somebody holds a copy. The session is now revoked."""

    def __init__(self, session_public_id: str, user_id: int):
        super().__init__(f"refresh token of session {session_public_id} reused")
        self.session_public_id = session_public_id
        self.user_id = user_id


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


@dataclass(frozen=True)
class SessionPolicy:
    keys: KeyRing
    issuer: str
    audience: str
    access_ttl: int
    refresh_ttl: int
    max_age: int
    reuse_grace: int
    max_sessions_per_user: int = 50


@dataclass(frozen=True)
class Device:
    """Who is asking, as the edge saw it."""

    user_agent: str = ""
    ip_address: str = ""
    client_name: str | None = None


@dataclass(frozen=True)
class SignedIn:
    user_id: int
    email: str
    session_id: str
    session_pk: int
    last_active_at: datetime
    client_name: str | None = None
    # When the access token of this request expires (None when not known).
    access_expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedTokens:
    session_id: str
    user_id: int
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    # When the refresh token stops working unless rotated: the idle or the absolute end.
    refresh_expires_at: datetime
    persistent: bool
    # Who these tokens sign in, so the edge needs no second lookup after a rotation.
    signed_in: SignedIn
    # False when the grace window handed back the current token without a rotation.
    rotated: bool = True


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `moment`, rounded up, never negative: what a cookie's
    Max-Age or a token response's `expires_in` says. A 900 s token issued a moment ago
    says 900, not 899; in the fraction of a second a client may hold it past its `exp`,
    the token is refused as expired like any other."""
    return max(0, math.ceil((moment - now).total_seconds()))


def _issue_access_token(
    *, user_id: int, session_id: str, now: datetime, not_after: datetime, policy: SessionPolicy
) -> tuple[str, datetime]:
    expires_at = min(now + timedelta(seconds=policy.access_ttl), not_after)
    token = tokens.encode_access_token(
        user_id=user_id,
        session_id=session_id,
        issued_at=_epoch(now),
        expires_at=_epoch(expires_at),
        keys=policy.keys,
        issuer=policy.issuer,
        audience=policy.audience,
    )
    return token, expires_at


def _tokens_for(
    *,
    signed_in: SignedIn,
    counter: int,
    idle_expires_at: datetime,
    expires_at: datetime,
    persistent: bool,
    now: datetime,
    policy: SessionPolicy,
    rotated: bool = True,
) -> IssuedTokens:
    refresh_expires_at = min(idle_expires_at, expires_at)
    user_id, session_id = signed_in.user_id, signed_in.session_id
    access_token, access_expires_at = _issue_access_token(
        user_id=user_id, session_id=session_id, now=now, not_after=refresh_expires_at, policy=policy
    )
    return IssuedTokens(
        session_id=session_id,
        user_id=user_id,
        signed_in=replace(signed_in, access_expires_at=access_expires_at),
        access_token=access_token,
        access_expires_at=access_expires_at,
        refresh_token=tokens.mint_refresh_token(session_id, counter, keys=policy.keys),
        refresh_expires_at=refresh_expires_at,
        persistent=persistent,
        rotated=rotated,
    )


def record_event(
    db: DbSession,
    *,
    user_id: int,
    kind: EventKind,
    now: datetime,
    device: Device = Device(),
    session_public_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Add a security event to the unit of work; the caller commits."""
    db.add(
        SecurityEvent(
            user_id=user_id,
            kind=str(kind),
            created_at=now,
            session_public_id=session_public_id,
            ip_address=device.ip_address[:64],
            user_agent=device.user_agent[:512],
            client_name=device.client_name,
            detail=detail,
        )
    )


def _active(now: datetime):
    """SQL condition: the session has not been revoked and has not lapsed."""
    return and_(Session.revoked_at.is_(None), Session.expires_at > now, Session.idle_expires_at > now)


def build_session(
    user_id: int, *, policy: SessionPolicy, now: datetime, device: Device = Device(), persistent: bool = False
) -> Session:
    """A new, unsaved session row for `user_id` at counter 0, signed in at `now`. Pure:
    adds nothing to any database session (`start_session` does, with its event)."""
    return Session(
        public_id=secrets.token_urlsafe(16),
        user_id=user_id,
        counter=0,
        created_at=now,
        rotated_at=now,
        last_active_at=now,
        expires_at=now + timedelta(seconds=policy.max_age),
        idle_expires_at=now + timedelta(seconds=policy.refresh_ttl),
        persistent=persistent,
        user_agent=device.user_agent[:512],
        ip_address=device.ip_address[:64],
        client_name=device.client_name,
    )


def start_session(
    db: DbSession,
    user: User,
    *,
    policy: SessionPolicy,
    now: datetime,
    device: Device = Device(),
    persistent: bool = False,
) -> IssuedTokens:
    """Sign `user` in on a new device: a new session at counter 0, and its tokens.

    Beyond `policy.max_sessions_per_user` active sessions, the least recently active
    ones are ended (and an event says so). Commits.
    """
    session = build_session(user.id, policy=policy, now=now, device=device, persistent=persistent)
    db.add(session)
    record_event(
        db, user_id=user.id, kind=EventKind.SIGNED_IN, now=now, device=device, session_public_id=session.public_id
    )
    db.flush()
    _end_sessions_over_limit(db, user_id=user.id, keep=session.id, policy=policy, now=now, device=device)
    db.commit()
    signed_in = SignedIn(
        user_id=user.id,
        email=user.email,
        session_id=session.public_id,
        session_pk=session.id,
        last_active_at=now,
        client_name=device.client_name,
    )
    return _tokens_for(
        signed_in=signed_in,
        counter=0,
        idle_expires_at=session.idle_expires_at,
        expires_at=session.expires_at,
        persistent=persistent,
        now=now,
        policy=policy,
    )


def _end_sessions_over_limit(
    db: DbSession, *, user_id: int, keep: int, policy: SessionPolicy, now: datetime, device: Device
) -> None:
    active = db.execute(
        select(Session.id, Session.public_id)
        .where(Session.user_id == user_id, Session.id != keep, _active(now))
        .order_by(Session.last_active_at.desc(), Session.id.desc())
        .offset(policy.max_sessions_per_user - 1)
    ).all()
    for session_pk, public_id in active:
        ended = db.execute(
            update(Session)
            .where(Session.id == session_pk, Session.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason="session_limit")
        ).rowcount
        if ended:
            record_event(
                db,
                user_id=user_id,
                kind=EventKind.SESSION_LIMIT_REACHED,
                now=now,
                device=device,
                session_public_id=public_id,
                detail=f"more than {policy.max_sessions_per_user} signed-in devices",
            )


_sessions, _users = Session.__table__, User.__table__

# Core statements built once. The two reads run through prepared.PreparedSelect: on every
# request, the ORM's and even Core's per-call machinery cost several times the indexed
# lookup itself (bench/run.py measures it).
_SESSION_WITH_USER = (
    select(
        _sessions.c.id,
        _sessions.c.user_id,
        _sessions.c.counter,
        _sessions.c.rotated_at,
        _sessions.c.last_active_at,
        _sessions.c.expires_at,
        _sessions.c.idle_expires_at,
        _sessions.c.revoked_at,
        _sessions.c.persistent,
        _sessions.c.client_name,
        _users.c.email,
        _users.c.disabled_at,
    )
    .join(_users, _users.c.id == _sessions.c.user_id)
    .where(_sessions.c.public_id == bindparam("public_id"))
)

# The per-request check: is this session of this user still active? The conditions are
# in SQL so that only the one timestamp the caller needs comes back to be converted.
_ACTIVE_SESSION = (
    select(_sessions.c.id, _sessions.c.last_active_at, _sessions.c.client_name, _users.c.email)
    .join(_users, _users.c.id == _sessions.c.user_id)
    .where(
        _sessions.c.public_id == bindparam("public_id"),
        _sessions.c.user_id == bindparam("user_id"),
        _sessions.c.revoked_at.is_(None),
        _sessions.c.expires_at > bindparam("now"),
        _sessions.c.idle_expires_at > bindparam("now"),
        _users.c.disabled_at.is_(None),
    )
)
_SESSION_WITH_USER_PREPARED = PreparedSelect(_SESSION_WITH_USER)
_ACTIVE_SESSION_PREPARED = PreparedSelect(_ACTIVE_SESSION)

# The compare-and-set of a rotation.
_ROTATE = (
    update(_sessions)
    .where(
        _sessions.c.id == bindparam("pk"),
        _sessions.c.counter == bindparam("counter"),
        _sessions.c.revoked_at.is_(None),
    )
    .values(
        counter=bindparam("next_counter"),
        rotated_at=bindparam("now"),
        last_active_at=bindparam("now"),
        idle_expires_at=bindparam("idle_expires_at"),
    )
)


def _load(db: DbSession, public_id: str):
    # On the session's connection and in its transaction, without Core's per-call
    # overhead (prepared.py): a rotation starts here.
    return _SESSION_WITH_USER_PREPARED.one_or_none(db.connection(), {"public_id": public_id})


def _is_live(row, now: datetime) -> bool:
    return row.revoked_at is None and row.disabled_at is None and now < row.expires_at and now < row.idle_expires_at


def authenticate(
    db: DbSession | Connection | Engine, access_token: str, *, policy: SessionPolicy, now: datetime
) -> SignedIn:
    """Sign a request in from its access token: verify the JWT, then check with one
    indexed lookup that its session is still active. The check reads and never writes,
    so `db` may also be a plain connection, or the engine itself: the fastest way, for
    the auth hook of every request (see prepared.py).

    Raises `AccessTokenExpired` (a genuine token past `exp`: try rotating),
    `InvalidToken` (not ours), or `SessionInactive` (revoked, lapsed, user disabled).
    """
    claims = tokens.decode_access_token(
        access_token, keys=policy.keys, now=_epoch(now), issuer=policy.issuer, audience=policy.audience
    )
    params = {"public_id": claims.session_id, "user_id": claims.user_id, "now": now}
    row = _ACTIVE_SESSION_PREPARED.one_or_none(db if isinstance(db, (Engine, Connection)) else db.connection(), params)
    if row is None:
        raise SessionInactive(claims.session_id)
    return SignedIn(
        user_id=claims.user_id,
        email=row.email,
        session_id=claims.session_id,
        session_pk=row.id,
        last_active_at=row.last_active_at,
        client_name=row.client_name,
        access_expires_at=datetime.fromtimestamp(claims.expires_at, timezone.utc),
    )


def _signed_in(row, public_id: str, *, last_active_at: datetime) -> SignedIn:
    return SignedIn(
        user_id=row.user_id,
        email=row.email,
        session_id=public_id,
        session_pk=row.id,
        last_active_at=last_active_at,
        client_name=row.client_name,
    )


def _advance_counter(
    db: DbSession, row, public_id: str, *, policy: SessionPolicy, now: datetime
) -> IssuedTokens | None:
    """The compare-and-set from `row.counter` to the next; the new tokens, or None when a
    parallel request moved the counter first. Commits either way."""
    next_counter, idle_expires_at = row.counter + 1, now + timedelta(seconds=policy.refresh_ttl)
    won = (
        db.connection()
        .execute(
            _ROTATE,
            {
                "pk": row.id,
                "counter": row.counter,
                "next_counter": next_counter,
                "now": now,
                "idle_expires_at": idle_expires_at,
            },
        )
        .rowcount
    )
    if won != 1:
        db.commit()
        return None
    # Issue the tokens before the commit: a crash in between rolls the counter back, so
    # no session is ever advanced to a token nobody received.
    issued = _tokens_for(
        signed_in=_signed_in(row, public_id, last_active_at=now),
        counter=next_counter,
        idle_expires_at=idle_expires_at,
        expires_at=row.expires_at,
        persistent=row.persistent,
        now=now,
        policy=policy,
    )
    db.commit()
    return issued


def rotate_refresh_token(db: DbSession, refresh_token: str, *, policy: SessionPolicy, now: datetime) -> IssuedTokens:
    """Exchange a refresh token for the session's next one and a new access token.

    Raises `RefreshRejected` for a forged, unknown, lapsed or revoked token (a forged one
    costs no query), and `RefreshTokenReused` (after revoking the session and recording
    an event) for a retired token outside the grace window. Commits what it writes.
    """
    try:
        public_id, counter = tokens.parse_refresh_token(refresh_token, keys=policy.keys)
    except InvalidToken:
        raise RefreshRejected("invalid refresh token") from None

    row = _load(db, public_id)
    if row is None or not _is_live(row, now):
        raise RefreshRejected("session is not active")

    if counter == row.counter:
        issued = _advance_counter(db, row, public_id, policy=policy, now=now)
        if issued is not None:
            return issued
        # A parallel request rotated first: serve its result through the grace path.
        row = _load(db, public_id)
        if row is None or not _is_live(row, now):
            raise RefreshRejected("session ended during rotation")

    if counter > row.counter:
        # Not something we ever handed out for this row, e.g. a database restored from an
        # older backup: treat as signed out, not as theft.
        raise RefreshRejected("refresh counter ahead of the session")

    # Parallel requests of one page load present the same token: serve them the winner's
    # token without a second rotation. The window is anchored at the rotation and never
    # re-armed, so no chain of stale tokens keeps a session alive.
    if counter == row.counter - 1 and now - row.rotated_at < timedelta(seconds=policy.reuse_grace):
        return _tokens_for(
            signed_in=_signed_in(row, public_id, last_active_at=row.last_active_at),
            counter=row.counter,
            idle_expires_at=row.idle_expires_at,
            expires_at=row.expires_at,
            persistent=row.persistent,
            now=now,
            policy=policy,
            rotated=False,
        )

    _revoke(db, session_pk=row.id, reason="reuse", now=now)
    record_event(
        db,
        user_id=row.user_id,
        kind=EventKind.REFRESH_TOKEN_REUSED,
        now=now,
        device=Device(client_name=row.client_name),
        session_public_id=public_id,
        detail=f"token {counter} presented after rotation to {row.counter}",
    )
    db.commit()
    raise RefreshTokenReused(public_id, row.user_id)


def touch_session(db: DbSession, signed_in: SignedIn, *, now: datetime) -> None:
    """Move the session's last-active time, writing at most once a minute per session."""
    if now - signed_in.last_active_at < LAST_ACTIVE_RESOLUTION:
        return
    # The condition makes parallel workers write once between them.
    db.execute(
        update(Session)
        .where(Session.id == signed_in.session_pk, Session.last_active_at <= now - LAST_ACTIVE_RESOLUTION)
        .values(last_active_at=now)
    )
    db.commit()


def _revoke(db: DbSession, *, session_pk: int, reason: str, now: datetime) -> bool:
    return (
        db.execute(
            update(Session)
            .where(Session.id == session_pk, Session.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def revoke_session(
    db: DbSession,
    public_id: str,
    *,
    user_id: int,
    now: datetime,
    reason: str = "signed_out",
    event: EventKind = EventKind.SIGNED_OUT,
    device: Device = Device(),
) -> bool:
    """End one session of `user_id`. Returns False (and changes nothing) when no active
    session of that user has this id, so callers can answer 404 without saying whether
    it exists for someone else. Commits."""
    row = db.execute(
        select(Session.id, Session.client_name).where(
            Session.public_id == public_id, Session.user_id == user_id, _active(now)
        )
    ).one_or_none()
    if row is None or not _revoke(db, session_pk=row.id, reason=reason, now=now):
        db.rollback()
        return False
    record_event(db, user_id=user_id, kind=event, now=now, device=device, session_public_id=public_id)
    db.commit()
    return True


def revoke_other_sessions(
    db: DbSession,
    *,
    user_id: int,
    keep_public_id: str | None,
    now: datetime,
    reason: str = "signed_out_by_user",
    event: EventKind | None = EventKind.OTHER_SESSIONS_REVOKED,
    device: Device = Device(),
) -> int:
    """End every active session of `user_id` except `keep_public_id` (None ends all).
    Returns how many were ended. Records `event` when it is given. Commits."""
    # Only active sessions: lapsed ones are already over, and counting them would tell
    # the user about devices the sessions page never showed.
    condition = [Session.user_id == user_id, _active(now)]
    if keep_public_id is not None:
        condition.append(Session.public_id != keep_public_id)
    ended = db.execute(update(Session).where(*condition).values(revoked_at=now, revoked_reason=reason)).rowcount
    if event is not None:
        record_event(
            db,
            user_id=user_id,
            kind=event,
            now=now,
            device=device,
            session_public_id=keep_public_id,
            detail=f"{ended} session{'s' if ended != 1 else ''} ended",
        )
    db.commit()
    return ended


def count_active_sessions(db: DbSession, *, user_id: int, now: datetime) -> int:
    return db.execute(
        select(func.count()).select_from(Session).where(Session.user_id == user_id, _active(now))
    ).scalar_one()


def list_active_sessions(db: DbSession, *, user_id: int, now: datetime) -> list[Session]:
    """The user's active sessions, most recently active first."""
    return list(
        db.execute(
            select(Session)
            .where(Session.user_id == user_id, _active(now))
            .order_by(Session.last_active_at.desc(), Session.id.desc())
        ).scalars()
    )


def list_security_events(db: DbSession, *, user_id: int, limit: int = 20) -> list[SecurityEvent]:
    """The user's most recent security events, newest first."""
    return list(
        db.execute(
            select(SecurityEvent)
            .where(SecurityEvent.user_id == user_id)
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc())
            .limit(limit)
        ).scalars()
    )


@dataclass(frozen=True)
class SessionTimes:
    """When one session started, was last used, and when it ends."""

    session_id: str
    created_at: datetime
    last_active_at: datetime
    rotated_at: datetime
    # The session lapses here unless its refresh token is used before (REFRESH_TOKEN_TTL).
    idle_expires_at: datetime
    # The session ends here whatever happens (SESSION_MAX_AGE); never moves.
    expires_at: datetime
    persistent: bool


def session_times(db: DbSession, public_id: str, *, user_id: int, now: datetime) -> SessionTimes:
    """The times of `user_id`'s active session `public_id`, for a page to show when it ends.

    Raises `SessionInactive` when no active session of that user has this id.
    """
    session = db.execute(
        select(Session).where(Session.public_id == public_id, Session.user_id == user_id, _active(now))
    ).scalar_one_or_none()
    if session is None:
        raise SessionInactive(public_id)
    return SessionTimes(
        session_id=session.public_id,
        created_at=session.created_at,
        last_active_at=session.last_active_at,
        rotated_at=session.rotated_at,
        idle_expires_at=session.idle_expires_at,
        expires_at=session.expires_at,
        persistent=session.persistent,
    )


def renew_session_tokens(
    db: DbSession, public_id: str, *, user_id: int, policy: SessionPolicy, now: datetime
) -> IssuedTokens:
    """Rotate `user_id`'s active session `public_id` now and return its fresh tokens, as
    after a password change: the session goes on, every copy of its old refresh token
    is retired.

    Raises `SessionInactive` when no active session of that user has this id. Commits.
    """
    # A parallel request may rotate between the read and the compare-and-set: read again.
    for _ in range(3):
        row = _load(db, public_id)
        if row is None or row.user_id != user_id or not _is_live(row, now):
            raise SessionInactive(public_id)
        issued = _advance_counter(db, row, public_id, policy=policy, now=now)
        if issued is not None:
            return issued
    raise SessionInactive(public_id)


def record_sign_in_rate_limited(
    db: DbSession,
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
    event was recorded. Commits."""
    recent = db.execute(
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
    record_event(db, user_id=user_id, kind=EventKind.SIGN_IN_RATE_LIMITED, now=now, device=device, detail=detail)
    db.commit()
    return True


PRUNE_BATCH_SIZE = 5_000


def _delete_in_batches(db: DbSession, model, condition, *, batch_size: int, max_batches: int | None) -> int:
    # Each DELETE takes at most `batch_size` rows found through an index and commits, so
    # a table of millions of rows is never locked for long and sign-ins go on meanwhile.
    removed, batches = 0, 0
    while max_batches is None or batches < max_batches:
        batch = select(model.id).where(condition).limit(batch_size)
        deleted = db.execute(
            delete(model).where(model.id.in_(batch.scalar_subquery())).execution_options(synchronize_session=False)
        ).rowcount
        db.commit()
        removed += deleted
        batches += 1
        if deleted < batch_size:
            break
    return removed


def prune_sessions(
    db: DbSession,
    *,
    now: datetime,
    older_than: timedelta,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> int:
    """Delete sessions that were revoked, went idle, or reached their absolute end more
    than `older_than` before `now`; active sessions are never touched. Works in batches
    of `batch_size` rows (at most `max_batches` per condition, None for all), committing
    after each. Returns how many rows were deleted. Raises nothing of its own."""
    cutoff = now - older_than
    return sum(
        _delete_in_batches(db, Session, column < cutoff, batch_size=batch_size, max_batches=max_batches)
        # One condition at a time, each a range scan of its own index.
        for column in (Session.revoked_at, Session.idle_expires_at, Session.expires_at)
    )


def prune_security_events(
    db: DbSession,
    *,
    now: datetime,
    older_than: timedelta,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> int:
    """Delete security events recorded more than `older_than` before `now`, in batches as
    `prune_sessions` does. Returns how many rows were deleted. Raises nothing of its own."""
    return _delete_in_batches(
        db, SecurityEvent, SecurityEvent.created_at < now - older_than, batch_size=batch_size, max_batches=max_batches
    )


class PruneSchedule:
    """Decides when opportunistic pruning is due: at most once per `interval` in this
    process, so small deployments that forget the cron job still stay tidy without
    every sign-in paying for a DELETE. Thread-safe; takes `now` like the engine does."""

    def __init__(self, interval: timedelta):
        self.interval = interval
        self._next_due: datetime | None = None
        self._lock = threading.Lock()

    def claim(self, now: datetime) -> bool:
        """True for exactly one caller per interval; that caller should prune now."""
        with self._lock:
            if self._next_due is not None and now < self._next_due:
                return False
            self._next_due = now + self.interval
            return True


def revoke_by_refresh_token(
    db: DbSession, refresh_token: str, *, policy: SessionPolicy, now: datetime, device: Device = Device()
) -> bool:
    """End the session a refresh token names (RFC 7009 revocation for API clients).

    Any token of the session that passes the MAC check will do, the current one or an
    older one: its holder could end the session through reuse detection anyway. Returns
    whether a session was ended; raises nothing for a bad token, so callers can answer
    the same way whatever was sent. Commits.
    """
    try:
        public_id, counter = tokens.parse_refresh_token(refresh_token, keys=policy.keys)
    except InvalidToken:
        return False
    row = _load(db, public_id)
    if row is None or counter > row.counter or not _is_live(row, now):
        return False
    return revoke_session(
        db,
        public_id,
        user_id=row.user_id,
        now=now,
        reason="signed_out",
        event=EventKind.SIGNED_OUT,
        device=replace(device, client_name=row.client_name),
    )
