"""The session engine: start, authenticate, rotate, revoke.

Plain Python over the database. It never touches `request`, `g` or cookies and imports
no Flask: callers pass values (the time, the policy, who the client is) and get values
back or an exception. The web edge (`auth/hooks.py`, the views) and the CLI are thin
adapters over it.

Transactions belong to the caller. Functions here add and flush and never commit; each
docstring says whether it writes. The view, hook or command wraps one user action in
`database.unit_of_work`, so a sign-in and its event, or a password change and the
sessions it ends, are committed together or not at all.

Lifecycle in one paragraph: a sign-in creates a session row with counter 0 and hands out
a refresh token for (session, 0) and a short access JWT. Rotation moves the counter from
n to n+1 with one compare-and-set UPDATE; the successor token is a pure function of
(session, n+1), so requests that race on one rotation all receive the same one. The
token for n is honoured for `reuse_grace` seconds after the rotation (parallel requests
of one page load) without writing anything; after that, or for any older counter, it is
a copy in the wrong hands and the whole session is revoked.

Names: `session_id` is a session's public id (JWT `sid`, refresh-token prefix, URLs);
`session_pk` is its primary key; `db_session` is an ORM session.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.orm import Session as DbSession

from . import session_queries, tokens
from .devices import Device
from .models import Session, User
from .security_events import EventKind, devices_signed_out, record_event
from .tokens import InvalidToken, KeyRing

__all__ = [
    "CredentialsChanged",
    "Device",
    "IssuedTokens",
    "RefreshRejected",
    "RefreshTokenReused",
    "SessionInactive",
    "SessionPolicy",
    "SessionTimes",
    "SignedIn",
    "SignedOut",
    "authenticate",
    "build_session",
    "list_active_sessions",
    "revoke_by_refresh_token",
    "revoke_other_sessions",
    "revoke_session",
    "rotate_refresh_token",
    "Presented",
    "seconds_until",
    "session_times",
    "sign_out_other_devices",
    "start_session",
    "supersede_session",
    "touch_session",
]

# Last-active is written at most this often per session: a write per request would make
# every page a write transaction.
LAST_ACTIVE_RESOLUTION = timedelta(seconds=60)


class EndReason(enum.StrEnum):
    """Why a session ended: stored in `sessions.revoked_reason`, and what the browser
    whose session it was is told when it next comes back."""

    SIGNED_OUT = "signed_out"  # the device signed itself out
    REVOKED_BY_USER = "revoked_by_user"  # signed out from another device
    SIGNED_OUT_BY_USER = "signed_out_by_user"  # "sign out all other devices"
    PASSWORD_CHANGED = "password_changed"
    SUPERSEDED = "superseded"  # this browser changed the password and goes on in a new session
    REUSE = "reuse"  # a copy of its refresh token was used
    SESSION_LIMIT = "session_limit"  # more than MAX_SESSIONS_PER_USER devices
    ACCOUNT_DISABLED = "account_disabled"
    SIGNED_OUT_BY_OPERATOR = "signed_out_by_operator"
    EXPIRED = "expired"  # idle or absolute end; never stored: the times say it


class SignedOut(Exception):
    """The credentials presented do not sign anybody in."""


class SessionInactive(SignedOut):
    """A genuine access token whose session was revoked, lapsed or whose user is disabled."""


class CredentialsChanged(Exception):
    """The password was replaced, or the account disabled, after this sign-in checked
    the password: the sign-in must not outlive the change that was meant to end it."""


class RefreshRejected(SignedOut):
    """The refresh token is forged, malformed, unknown, lapsed, revoked or from the future.
    `reason` says why its session ended, when it had one (None for a forged token or a
    counter ahead of the session: nothing to tell a person)."""

    def __init__(self, message: str, *, reason: EndReason | None = None, superseded: bool = False):
        super().__init__(message)
        self.reason = reason
        # Replaced moments ago by a new session in the same browser (it changed the
        # password): this is that browser's request from just before, whose answer must
        # not clear the new session's cookies.
        self.superseded = superseded


class DeviceKeyRequired(RefreshRejected):
    """The session is bound to its device (DBSC): its refresh token alone renews nothing.
    Nothing was written: whether this is a copied cookie jar (an alert) or a request that
    simply arrived late is for the caller to tell."""

    def __init__(self, session_id: str, row):
        super().__init__(f"session {session_id} is bound to its device")
        self.session_id = session_id
        self.user_id = row.user_id
        self.bound_device = Device(user_agent=row.user_agent, ip_address=row.ip_address, client_name=row.client_name)


class RefreshTokenReused(RefreshRejected):
    """A retired refresh token came back: somebody holds a copy. The session's revocation
    and its event have been added to the unit of work: the caller must commit them."""

    def __init__(self, session_id: str, user_id: int):
        super().__init__(f"refresh token of session {session_id} reused", reason=EndReason.REUSE)
        self.session_id = session_id
        self.user_id = user_id


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

    @classmethod
    def from_config(cls, config: Mapping) -> SessionPolicy:
        """The policy the settings describe (`config.load_config`'s names)."""
        return cls(
            keys=KeyRing.from_secrets(config["SECRET_KEY"], config["SECRET_KEY_FALLBACKS"]),
            issuer=config["JWT_ISSUER"],
            audience=config["JWT_AUDIENCE"],
            access_ttl=config["ACCESS_TOKEN_TTL"],
            refresh_ttl=config["REFRESH_TOKEN_TTL"],
            max_age=config["SESSION_MAX_AGE"],
            reuse_grace=config["REFRESH_REUSE_GRACE"],
            max_sessions_per_user=config["MAX_SESSIONS_PER_USER"],
        )


@dataclass(frozen=True)
class SignedIn:
    """Who a request signs in as."""

    user_id: int
    email: str
    session_id: str
    session_pk: int
    last_active_at: datetime
    client_name: str | None = None
    # When the access token of this request expires (None when not known).
    access_expires_at: datetime | None = None
    # The session's current counter, when this request's access token is the first proof
    # that the rotation to it reached the browser: `touch_session` records it.
    delivers_counter: int | None = None
    # Bound to its device (DBSC): only a proof from the device's key renews it.
    device_bound: bool = False
    # Not bound, and never rotated: just signed in, so a browser may still bind it.
    bindable: bool = False


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
    # False when the counter did not move: a grace answer, or a lost rotation sent again.
    rotated: bool = True
    # False when `refresh_token` is the one the holder presented (a grace answer): the
    # browser's refresh cookie is left as it is.
    new_refresh_token: bool = True


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


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `moment`, rounded up, never negative: what a cookie's
    Max-Age or a token response's `expires_in` says. A 900 s token issued a moment ago
    says 900, not 899; in the fraction of a second a client may hold it past its `exp`,
    the token is refused as expired like any other."""
    return max(0, math.ceil((moment - now).total_seconds()))


def _issue_access_token(
    *, user_id: int, session_id: str, counter: int, now: datetime, not_after: datetime, policy: SessionPolicy
) -> tuple[str, datetime]:
    expires_at = min(now + timedelta(seconds=policy.access_ttl), not_after)
    token = tokens.encode_access_token(
        user_id=user_id,
        session_id=session_id,
        counter=counter,
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
    new_refresh_token: bool = True,
) -> IssuedTokens:
    """The refresh token for `counter` and an access token issued with it."""
    refresh_expires_at = min(idle_expires_at, expires_at)
    user_id, session_id = signed_in.user_id, signed_in.session_id
    access_token, access_expires_at = _issue_access_token(
        user_id=user_id, session_id=session_id, counter=counter, now=now, not_after=refresh_expires_at, policy=policy
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
        new_refresh_token=new_refresh_token,
    )


class Presented(enum.Enum):
    """What a refresh token with a valid MAC is, given its session's row."""

    CURRENT = "current"  # the session's counter: rotate
    PREVIOUS_IN_GRACE = "previous_in_grace"  # parallel requests of one page load
    PREVIOUS_UNDELIVERED = "previous_undelivered"  # the rotation's answer never arrived
    REUSED = "reused"  # a retired token whose successor was delivered: a copy
    AHEAD = "ahead"  # never handed out for this row (a database restored from a backup)


def _classify(row, counter: int, *, policy: SessionPolicy, now: datetime) -> Presented:
    if counter == row.counter:
        return Presented.CURRENT
    if counter > row.counter:
        return Presented.AHEAD
    if counter == row.counter - 1:
        # The window is anchored at the rotation and never re-armed, so no chain of
        # stale tokens keeps a session alive.
        if now - row.rotated_at < timedelta(seconds=policy.reuse_grace):
            return Presented.PREVIOUS_IN_GRACE
        if row.delivered_counter < row.counter:
            return Presented.PREVIOUS_UNDELIVERED
    return Presented.REUSED


def _active(now: datetime):
    """SQL condition: the session has not been revoked and has not lapsed."""
    return and_(Session.revoked_at.is_(None), Session.expires_at > now, Session.idle_expires_at > now)


def _is_live(row, now: datetime) -> bool:
    return row.revoked_at is None and row.disabled_at is None and now < row.expires_at and now < row.idle_expires_at


def _end_reason(row, now: datetime) -> EndReason | None:
    """Why the session of `row` (not live at `now`) is over."""
    if row.revoked_at is not None:
        try:
            return EndReason(row.revoked_reason)
        except ValueError:
            return None  # a reason a newer release wrote
    if row.disabled_at is not None:
        return EndReason.ACCOUNT_DISABLED
    return EndReason.EXPIRED


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
    db_session: DbSession,
    user: User,
    *,
    policy: SessionPolicy,
    now: datetime,
    device: Device = Device(),
    persistent: bool = False,
    event: EventKind | None = EventKind.SIGNED_IN,
) -> IssuedTokens:
    """Sign `user` in on a new device: a new session at counter 0, and its tokens, with
    `event` recorded (None for none: the caller records its own).

    Beyond `policy.max_sessions_per_user` active sessions, the least recently active
    ones are ended (and an event says so). Raises `CredentialsChanged` when the user's
    password hash is no longer `user.password_hash` (the one the caller checked) or the
    account was disabled meanwhile. Writes; does not commit.
    """
    checked_hash = user.password_hash
    session = build_session(user.id, policy=policy, now=now, device=device, persistent=persistent)
    db_session.add(session)
    if event is not None:
        record_event(db_session, user_id=user.id, kind=event, now=now, device=device, session_id=session.public_id)
    db_session.flush()
    _confirm_credentials(db_session, user_id=user.id, checked_hash=checked_hash)
    _end_sessions_over_limit(db_session, user_id=user.id, keep=session.id, policy=policy, now=now, device=device)
    signed_in = SignedIn(
        user_id=user.id,
        email=user.email,
        session_id=session.public_id,
        session_pk=session.id,
        last_active_at=now,
        client_name=device.client_name,
        bindable=True,
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


def _confirm_credentials(db_session: DbSession, *, user_id: int, checked_hash: str) -> None:
    """Raise `CredentialsChanged` unless the user's password is still the one checked.

    A reset (or a password change, or disabling) that commits between a sign-in's
    password check and its new session would otherwise leave that session alive, signed
    in with a password that no longer works. Read after the session row is written: on
    SQLite the write took the database's write lock, so this read sees every commit
    before it and none can come between; on PostgreSQL `FOR SHARE` waits for a change in
    flight, and a change that starts later waits for this sign-in, then ends its session.
    """
    current = db_session.execute(
        select(User.password_hash, User.disabled_at).where(User.id == user_id).with_for_update(read=True)
    ).one_or_none()
    if current is None or current.password_hash != checked_hash or current.disabled_at is not None:
        raise CredentialsChanged()


def _end_sessions_over_limit(
    db_session: DbSession, *, user_id: int, keep: int, policy: SessionPolicy, now: datetime, device: Device
) -> None:
    over_limit = db_session.execute(
        select(Session.id, Session.public_id)
        .where(Session.user_id == user_id, Session.id != keep, _active(now))
        .order_by(Session.last_active_at.desc(), Session.id.desc())
        .offset(policy.max_sessions_per_user - 1)
    ).all()
    for session_pk, session_id in over_limit:
        if _revoke(db_session, session_pk=session_pk, reason=EndReason.SESSION_LIMIT, now=now):
            record_event(
                db_session,
                user_id=user_id,
                kind=EventKind.SESSION_LIMIT_REACHED,
                now=now,
                device=device,
                session_id=session_id,
                detail=f"more than {policy.max_sessions_per_user} signed-in devices",
            )


def authenticate(
    source: DbSession | Connection | Engine,
    access_token: str,
    *,
    policy: SessionPolicy,
    now: datetime,
    refresh_token: str | None = None,
) -> SignedIn:
    """Sign a request in from its access token: verify the JWT, then check with one
    indexed lookup that its session is still active. Reads only, so `source` may be an
    ORM session, a connection, or the engine itself: the fastest way, for the auth hook
    of every request (see `session_queries.find_active_session`).

    `refresh_token` is the one the same request carries (a browser sends both cookies):
    while the session's latest rotation is not known to have reached its holder, the
    current refresh token proves it did, as the access token issued with it does. A
    page whose grace answer arrived after its rotation's holds exactly that pair (the
    new refresh token, an access token issued for the previous one).

    Raises `tokens.AccessTokenExpired` (a genuine token past `exp`: try rotating),
    `tokens.InvalidToken` (not ours), or `SessionInactive` (revoked, lapsed, user disabled).
    """
    claims = tokens.decode_access_token(
        access_token, keys=policy.keys, now=_epoch(now), issuer=policy.issuer, audience=policy.audience
    )
    row = session_queries.find_active_session(source, session_id=claims.session_id, user_id=claims.user_id, now=now)
    if row is None:
        raise SessionInactive(claims.session_id)
    undelivered = row.delivered_counter < row.counter
    first_proof = undelivered and (
        claims.counter == row.counter
        or _is_refresh_token_for(refresh_token, claims.session_id, row.counter, policy=policy)
    )
    return SignedIn(
        user_id=claims.user_id,
        email=row.email,
        session_id=claims.session_id,
        session_pk=row.id,
        last_active_at=row.last_active_at,
        client_name=row.client_name,
        access_expires_at=datetime.fromtimestamp(claims.expires_at, timezone.utc),
        delivers_counter=row.counter if first_proof else None,
        device_bound=row.device_bound_at is not None,
        bindable=row.device_bound_at is None and row.counter == 0,
    )


def _is_refresh_token_for(token: str | None, session_id: str, counter: int, *, policy: SessionPolicy) -> bool:
    """Whether `token` is a genuine refresh token of `session_id` at `counter`."""
    if not token:
        return False
    try:
        return tokens.parse_refresh_token(token, keys=policy.keys) == (session_id, counter)
    except tokens.InvalidToken:
        return False


def touch_session(db_session: DbSession, signed_in: SignedIn, *, now: datetime) -> bool:
    """What a signed-in request tells the session: that the rotation its access token
    was issued with reached the browser (once per rotation), and the last-active time
    (at most once a minute). Returns whether it wrote; does not commit."""
    wrote = False
    if signed_in.delivers_counter is not None:
        wrote = session_queries.mark_delivered(db_session, pk=signed_in.session_pk, counter=signed_in.delivers_counter)
    if now - signed_in.last_active_at >= LAST_ACTIVE_RESOLUTION:
        wrote |= session_queries.touch(db_session, pk=signed_in.session_pk, now=now, resolution=LAST_ACTIVE_RESOLUTION)
    return wrote


def _signed_in(row, session_id: str, *, last_active_at: datetime) -> SignedIn:
    return SignedIn(
        user_id=row.user_id,
        email=row.email,
        session_id=session_id,
        session_pk=row.id,
        last_active_at=last_active_at,
        client_name=row.client_name,
        device_bound=row.device_key is not None,
    )


def _advance(db_session: DbSession, row, session_id: str, *, policy: SessionPolicy, now: datetime):
    """The compare-and-set from `row.counter` to the next, and the new tokens; None when
    a parallel request moved the counter first. The tokens are made before the caller
    commits: a crash in between rolls the counter back, so no session is ever advanced
    to a token nobody received."""
    idle_expires_at = now + timedelta(seconds=policy.refresh_ttl)
    if not session_queries.advance_counter(
        db_session, pk=row.id, counter=row.counter, now=now, idle_expires_at=idle_expires_at
    ):
        return None
    return _tokens_for(
        signed_in=_signed_in(row, session_id, last_active_at=now),
        counter=row.counter + 1,
        idle_expires_at=idle_expires_at,
        expires_at=row.expires_at,
        persistent=row.persistent,
        now=now,
        policy=policy,
    )


def rotate_refresh_token(
    db_session: DbSession, refresh_token: str, *, policy: SessionPolicy, now: datetime, device_proof: bool = False
) -> IssuedTokens:
    """Exchange a refresh token for the session's next one and a new access token.

    With the session at counter n, the token for:
    - n: compare-and-set to n+1, and the tokens for n+1;
    - n-1, within `reuse_grace` of the rotation (the parallel requests of one page
      load): a new access token only, writing nothing. The refresh token stays the one
      presented, so a copy of a retired token never yields the current one: it cannot
      follow the session from rotation to rotation;
    - n-1 later, if n never reached anybody (the rotation's answer was lost): the tokens
      for n again, once: n now counts as delivered and a new grace window opens for the
      page that fetches them. Not theft;
    - n-1 later once n was delivered, or anything older: a copy in the wrong hands.

    A session bound to its device rotates only with `device_proof` (the caller checked a
    signature of the device's key over a challenge for the current counter); without it,
    `DeviceKeyRequired`, whatever the token.

    Raises `RefreshRejected` for a forged, unknown, lapsed or revoked token or a counter
    ahead of the session (a forged one costs no query), and `RefreshTokenReused` for a
    copy, after adding the session's revocation and an event to the unit of work: the
    caller commits either way (a rotation, or the revocation). Writes; does not commit.
    """
    try:
        session_id, counter = tokens.parse_refresh_token(refresh_token, keys=policy.keys)
    except InvalidToken:
        raise RefreshRejected("invalid refresh token") from None

    row = session_queries.load_session_with_user(db_session, session_id)
    if row is None:
        # Pruned, long after it ended.
        raise RefreshRejected("unknown session", reason=EndReason.EXPIRED)
    if not _is_live(row, now):
        reason = _end_reason(row, now)
        superseded = reason is EndReason.SUPERSEDED and now - row.revoked_at < timedelta(seconds=policy.reuse_grace)
        raise RefreshRejected("session is not active", reason=reason, superseded=superseded)
    if row.device_key is not None and not device_proof:
        raise DeviceKeyRequired(session_id, row)

    presented = _classify(row, counter, policy=policy, now=now)
    if presented is Presented.CURRENT:
        issued = _advance(db_session, row, session_id, policy=policy, now=now)
        if issued is not None:
            return issued
        # A parallel request rotated first: the compare-and-set waited for its lock, so
        # its rotation is committed and this read sees it.
        row = session_queries.load_session_with_user(db_session, session_id)
        if row is None or not _is_live(row, now):
            raise RefreshRejected("session ended during rotation", reason=row and _end_reason(row, now))
        presented = _classify(row, counter, policy=policy, now=now)

    if presented is Presented.AHEAD:
        # Not something we ever handed out for this row: signed out, not theft.
        raise RefreshRejected("refresh counter ahead of the session")
    if presented is Presented.PREVIOUS_IN_GRACE:
        return _tokens_for(
            signed_in=_signed_in(row, session_id, last_active_at=row.last_active_at),
            counter=counter,
            idle_expires_at=row.idle_expires_at,
            expires_at=row.expires_at,
            persistent=row.persistent,
            now=now,
            policy=policy,
            rotated=False,
            new_refresh_token=False,
        )
    if presented is Presented.PREVIOUS_UNDELIVERED:
        # Answered once, not forever: the answer itself counts as the delivery (one write),
        # so the previous token coming back after this page load is reuse. Otherwise a
        # copy that only ever presents the previous token would be served for days.
        if not session_queries.redeliver(db_session, pk=row.id, counter=row.counter, now=now):
            # A parallel request of the same page answered it first: its grace window.
            return rotate_refresh_token(db_session, refresh_token, policy=policy, now=now, device_proof=device_proof)
        return _tokens_for(
            signed_in=_signed_in(row, session_id, last_active_at=row.last_active_at),
            counter=row.counter,
            idle_expires_at=row.idle_expires_at,
            expires_at=row.expires_at,
            persistent=row.persistent,
            now=now,
            policy=policy,
            rotated=False,
        )
    _end_reused_session(db_session, row, session_id, counter=counter, now=now)
    raise RefreshTokenReused(session_id, row.user_id)


def _end_reused_session(db_session: DbSession, row, session_id: str, *, counter: int, now: datetime) -> None:
    _revoke(db_session, session_pk=row.id, reason=EndReason.REUSE, now=now)
    # The event names the device whose sign-in was copied, as it signed in.
    record_event(
        db_session,
        user_id=row.user_id,
        kind=EventKind.REFRESH_TOKEN_REUSED,
        now=now,
        device=Device(user_agent=row.user_agent, ip_address=row.ip_address, client_name=row.client_name),
        session_id=session_id,
    )


def _revoke(db_session: DbSession, *, session_pk: int, reason: str, now: datetime) -> bool:
    ended = db_session.execute(
        update(Session)
        .where(Session.id == session_pk, Session.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return ended.rowcount == 1


def revoke_session(
    db_session: DbSession,
    session_id: str,
    *,
    user_id: int,
    now: datetime,
    reason: EndReason = EndReason.SIGNED_OUT,
    event: EventKind = EventKind.SIGNED_OUT,
) -> bool:
    """End one session of `user_id`, recording `event` about that session's device (the
    one that ended, not the one that ended it). Returns False (and writes nothing) when
    no active session of that user has this id, so callers can answer 404 without
    saying whether it exists for someone else. Writes; does not commit."""
    row = db_session.execute(
        select(Session.id, Session.user_agent, Session.ip_address, Session.client_name).where(
            Session.public_id == session_id, Session.user_id == user_id, _active(now)
        )
    ).one_or_none()
    if row is None or not _revoke(db_session, session_pk=row.id, reason=reason, now=now):
        return False
    ended_device = Device(user_agent=row.user_agent, ip_address=row.ip_address, client_name=row.client_name)
    record_event(db_session, user_id=user_id, kind=event, now=now, device=ended_device, session_id=session_id)
    return True


def revoke_other_sessions(
    db_session: DbSession,
    *,
    user_id: int,
    keep_session_id: str | None,
    now: datetime,
    reason: EndReason = EndReason.SIGNED_OUT_BY_USER,
) -> int:
    """End every active session of `user_id` except `keep_session_id` (None ends all).
    Returns how many were ended; the caller records the event its action deserves (one
    that ended nothing may deserve none). Writes; does not commit."""
    # Only active sessions: lapsed ones are already over, and counting them would tell
    # the user about devices the sessions page never showed.
    condition = [Session.user_id == user_id, _active(now)]
    if keep_session_id is not None:
        condition.append(Session.public_id != keep_session_id)
    return db_session.execute(update(Session).where(*condition).values(revoked_at=now, revoked_reason=reason)).rowcount


def sign_out_other_devices(
    db_session: DbSession, *, user_id: int, keep_session_id: str, now: datetime, device: Device
) -> int:
    """ "Sign out all other devices" from session `keep_session_id` on `device`: end the
    user's other active sessions and, when that ended any, record it with how many.
    Returns how many ended. Writes; does not commit."""
    ended = revoke_other_sessions(db_session, user_id=user_id, keep_session_id=keep_session_id, now=now)
    if ended:  # a click that ended nothing is not an event
        record_event(
            db_session,
            user_id=user_id,
            kind=EventKind.OTHER_SESSIONS_REVOKED,
            now=now,
            device=device,
            session_id=keep_session_id,
            detail=devices_signed_out(ended),
        )
    return ended


def revoke_by_refresh_token(db_session: DbSession, refresh_token: str, *, policy: SessionPolicy, now: datetime) -> bool:
    """End the session a refresh token names (RFC 7009 revocation for API clients).

    The current token, or the previous one where rotation would still honour it, signs
    the session out. A copy (what rotation would call reuse) ends it as reuse, with the
    alarm: whoever holds a retired token is not the session's owner. Returns whether a
    session was ended; raises nothing for a bad token, so callers can answer the same
    way whatever was sent. Writes; does not commit.
    """
    try:
        session_id, counter = tokens.parse_refresh_token(refresh_token, keys=policy.keys)
    except InvalidToken:
        return False
    row = session_queries.load_session_with_user(db_session, session_id)
    if row is None or not _is_live(row, now):
        return False
    presented = _classify(row, counter, policy=policy, now=now)
    if presented is Presented.AHEAD:
        return False
    if presented is Presented.REUSED:
        _end_reused_session(db_session, row, session_id, counter=counter, now=now)
        return True
    return revoke_session(db_session, session_id, user_id=row.user_id, now=now)


def supersede_session(db_session: DbSession, session_id: str, *, user_id: int, now: datetime) -> bool:
    """End `user_id`'s active session `session_id` because its browser goes on in a new
    one (after a password change). Records no event: the caller records its own.
    Returns whether it was active. Writes; does not commit."""
    ended = db_session.execute(
        update(Session)
        .where(Session.public_id == session_id, Session.user_id == user_id, _active(now))
        .values(revoked_at=now, revoked_reason=EndReason.SUPERSEDED)
    )
    return ended.rowcount == 1


def reissue_access_token(
    db_session: DbSession, session_id: str, *, policy: SessionPolicy, now: datetime
) -> IssuedTokens:
    """A new access token for the active session `session_id` at its current counter,
    leaving the refresh token as it is (the browser keeps its refresh cookie). Raises
    `RefreshRejected` when the session is not active. Reads only."""
    row = session_queries.load_session_with_user(db_session, session_id)
    if row is None or not _is_live(row, now):
        raise RefreshRejected("session is not active", reason=row and _end_reason(row, now))
    return _tokens_for(
        signed_in=_signed_in(row, session_id, last_active_at=row.last_active_at),
        counter=row.counter,
        idle_expires_at=row.idle_expires_at,
        expires_at=row.expires_at,
        persistent=row.persistent,
        now=now,
        policy=policy,
        rotated=False,
        new_refresh_token=False,
    )


# A session binds to its device only this soon after its sign-in. A browser that binds
# does so within milliseconds of the offer; later, a registration may come from a copy of
# the cookies, and binding would hand the session to the copy's key.
BINDING_WINDOW = timedelta(minutes=5)


def bind_to_device(db_session: DbSession, session_id: str, *, user_id: int, public_jwk: str, now: datetime) -> bool:
    """Bind `user_id`'s active session `session_id` to the device key `public_jwk` (DBSC
    registration), if it signed in less than `BINDING_WINDOW` ago. Once only: a bound
    session is never bound again, to this key or another. Returns whether it bound it.
    Writes; does not commit."""
    bound = db_session.execute(
        update(Session)
        .where(
            Session.public_id == session_id,
            Session.user_id == user_id,
            Session.device_key.is_(None),
            Session.created_at > now - BINDING_WINDOW,
            _active(now),
        )
        .values(device_key=public_jwk, device_bound_at=now)
        .execution_options(synchronize_session=False)
    )
    return bound.rowcount == 1


@dataclass(frozen=True)
class BoundSession:
    user_id: int
    counter: int
    rotated_at: datetime
    device_key: str


def device_key_of(db_session: DbSession, session_id: str, *, now: datetime) -> BoundSession | None:
    """The key and rotation state of the active, bound session `session_id`, or None.
    Reads only."""
    row = session_queries.find_bound_session(db_session, session_id=session_id, now=now)
    if row is None:
        return None
    return BoundSession(user_id=row.user_id, counter=row.counter, rotated_at=row.rotated_at, device_key=row.device_key)


def list_active_sessions(db_session: DbSession, *, user_id: int, now: datetime) -> list[Session]:
    """The user's active sessions, most recently active first. Reads only."""
    return list(
        db_session.execute(
            select(Session)
            .where(Session.user_id == user_id, _active(now))
            .order_by(Session.last_active_at.desc(), Session.id.desc())
        ).scalars()
    )


def session_times(source: DbSession | Connection, session_id: str, *, user_id: int, now: datetime) -> SessionTimes:
    """The times of `user_id`'s active session `session_id`, for a page to show when it
    ends, read on an ORM session or a connection. Raises `SessionInactive` when no active
    session of that user has this id. Reads only."""
    row = session_queries.find_session_times(source, session_id=session_id, user_id=user_id, now=now)
    if row is None:
        raise SessionInactive(session_id)
    return SessionTimes(session_id=session_id, **row._asdict())
