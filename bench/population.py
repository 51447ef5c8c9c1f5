"""The bench's users and sessions, created straight in an app's SQLite database, and the
cookie lines their browsers send.

Session rows come from the engine's own `build_session`, and are inserted with the
columns it set (`column_values`), so a column added to the model reaches the bench's rows
without anyone editing this file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Insert, create_engine, func, insert, inspect, literal, select
from sqlalchemy.pool import NullPool

from webapp import tokens
from webapp.models import SecurityEvent, Session, User
from webapp.sessions import Device, build_session

from .account_page import StoredEvent
from .server import AppUnderTest, FlaskSessionCookie
from .wrk import request_line

PASSWORD = "correct horse battery staple"
# More than any request rate this app reaches here: lines for wrk never run out.
MAX_RPS = 4000
# Who the bench's live sessions say signed them in, and the expired ones that fill the large table.
BENCH_DEVICE = Device(user_agent="wrk", ip_address="127.0.0.1")
FILLER_DEVICE = Device(user_agent="filler", ip_address="127.0.0.1")
# Rows per executemany when inserting built sessions.
INSERT_BATCH_SIZE = 1000


@contextmanager
def connect(database: Path) -> Iterator[Connection]:
    """A connection to `database`; the caller commits what it writes. Nothing is pooled,
    so between uses the bench holds no connection beside the server's."""
    engine = create_engine(f"sqlite:///{database}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def column_values(row: Session) -> dict[str, object]:
    """What an INSERT of the unsaved `row` sends, by column: every column its builder set.
    Columns it left unset (the primary key, `revoked_at`, ...) are left out, so the
    database and the model's defaults fill them as they would for an ORM flush."""
    state = inspect(row)
    return {
        attribute.columns[0].key: state.dict[attribute.key]
        for attribute in state.mapper.column_attrs
        if attribute.key in state.dict
    }


def _insert_users(connection: Connection, emails: Sequence[str], password_hash: str, *, now: datetime) -> list[int]:
    connection.execute(
        insert(User), [{"email": email, "password_hash": password_hash, "created_at": now} for email in emails]
    )
    ids = dict(connection.execute(select(User.email, User.id).where(User.email.in_(emails))).all())
    return [ids[email] for email in emails]


def create_users(database: Path, emails: Sequence[str], password_hash: str, *, now: datetime) -> list[int]:
    """Users with these emails and this password hash, created at `now`; their ids, in order."""
    with connect(database) as connection:
        user_ids = _insert_users(connection, emails, password_hash, now=now)
        connection.commit()
    return user_ids


def create_security_events(database: Path, user_id: int, events: Sequence[StoredEvent]) -> None:
    """Record `events` as security events of `user_id`, as the engine's `record_event` would."""
    with connect(database) as connection:
        connection.execute(
            insert(SecurityEvent),
            [
                {
                    "user_id": user_id,
                    "kind": event.kind,
                    "created_at": event.created_at,
                    "session_public_id": event.session_public_id,
                    "ip_address": event.ip_address,
                    "user_agent": event.user_agent,
                    "client_name": event.client_name,
                }
                for event in events
            ],
        )
        connection.commit()


@dataclass(frozen=True)
class SessionPool:
    """Sessions of one user created directly in the database, and the access tokens a
    browser of each would hold."""

    app: AppUnderTest
    user_id: int
    public_ids: tuple[str, ...]
    valid_access: Mapping[str, str]  # public id -> an access token valid for an hour
    expired_access: Mapping[str, str]  # public id -> one that expired an hour ago

    def counters(self) -> dict[str, int]:
        """Each session's counter in the database now. Raises SystemExit if any session
        was revoked: the bench presented a token the server took for a stolen one."""
        with connect(self.app.database) as connection:
            rows = connection.execute(
                select(Session.public_id, Session.counter, Session.revoked_at).where(Session.user_id == self.user_id)
            ).all()
        revoked = [public_id for public_id, _, revoked_at in rows if revoked_at is not None]
        if revoked:
            raise SystemExit(f"{len(revoked)} bench sessions were revoked: the rotation lines are wrong")
        return {public_id: counter for public_id, counter, _ in rows}


def create_sessions(app: AppUnderTest, user_id: int, count: int, *, now: datetime) -> SessionPool:
    """`count` live sessions of `user_id` at counter 0, as a sign-in at `now` makes them."""
    rows = [build_session(user_id, policy=app.policy, now=now, device=BENCH_DEVICE) for _ in range(count)]
    with connect(app.database) as connection:
        for start in range(0, count, INSERT_BATCH_SIZE):
            connection.execute(insert(Session), [column_values(row) for row in rows[start : start + INSERT_BATCH_SIZE]])
        connection.commit()
    public_ids = tuple(row.public_id for row in rows)
    issued = int(now.timestamp())

    def access_token(issued_at: int, expires_at: int, public_id: str) -> str:
        return tokens.encode_access_token(
            user_id=user_id,
            session_id=public_id,
            # Issued with the session's first refresh token, whose delivery build_session
            # already counts: presenting it writes nothing, as for a browser mid-session.
            counter=0,
            issued_at=issued_at,
            expires_at=expires_at,
            keys=app.policy.keys,
            issuer=app.policy.issuer,
            audience=app.policy.audience,
        )

    return SessionPool(
        app=app,
        user_id=user_id,
        public_ids=public_ids,
        valid_access={public_id: access_token(issued, issued + 3600, public_id) for public_id in public_ids},
        expired_access={public_id: access_token(issued - 7200, issued - 3600, public_id) for public_id in public_ids},
    )


def count_sessions(database: Path, *, user_agent: str | None = None) -> int:
    """How many session rows the database holds (only those of `user_agent`, if given)."""
    statement = select(func.count()).select_from(Session)
    if user_agent is not None:
        statement = statement.where(Session.user_agent == user_agent)
    with connect(database) as connection:
        return connection.execute(statement).scalar_one()


def _expired_sessions_insert(template: Session, *, rows: int, first_user_id: int, users: int) -> Insert:
    """INSERT ... SELECT over a recursive CTE: `rows` copies of `template`, each with a
    public id of its own, spread over `users` users with consecutive ids."""
    values = column_values(template)
    sequence = select(literal(1).label("n")).cte("seq", recursive=True)
    sequence = sequence.union_all(select(sequence.c.n + 1).where(sequence.c.n < rows))
    # What differs from row to row; every other column takes the template's value.
    per_row = {
        "public_id": func.printf("x%021d", sequence.c.n),
        "user_id": first_user_id + sequence.c.n % users,
    }
    if not per_row.keys() <= values.keys():
        raise SystemExit(f"build_session no longer sets {sorted(per_row.keys() - values.keys())}: see population.py")
    table_columns = Session.__table__.c
    selected = [per_row.get(name, literal(value, table_columns[name].type)) for name, value in values.items()]
    return insert(Session).from_select(list(values), select(*selected).select_from(sequence))


def insert_expired_sessions(app: AppUnderTest, *, rows: int, users: int, password_hash: str, now: datetime) -> float:
    """Insert `rows` sessions, spread over `users` new users, that ended 60 days before
    `now` (they went idle: signed in and never used again), so `flask prune` removes them.
    One `build_session` row is the template of a single INSERT ... SELECT over a recursive
    CTE. Returns the seconds it took."""
    started = time.perf_counter()
    signed_in_at = now - timedelta(days=60, seconds=app.policy.refresh_ttl)
    with connect(app.database) as connection:
        # A throwaway database: a crash may lose it, so no commit waits for the disk.
        connection.exec_driver_sql("PRAGMA synchronous=OFF")
        user_ids = _insert_users(
            connection, [f"filler-{n}@example.com" for n in range(users)], password_hash, now=signed_in_at
        )
        if user_ids != list(range(user_ids[0], user_ids[0] + users)):
            raise SystemExit("the filler users' ids are not consecutive")
        template = build_session(user_ids[0], policy=app.policy, now=signed_in_at, device=FILLER_DEVICE)
        connection.execute(_expired_sessions_insert(template, rows=rows, first_user_id=user_ids[0], users=users))
        connection.commit()
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def access_lines(pool: SessionPool, cookie: FlaskSessionCookie) -> list[str]:
    """One line per session: the Flask session cookie and a valid access cookie. Lines
    may be replayed (wrk's `cycle`)."""
    access_name = pool.app.cookie_name("access_token")
    return [
        request_line(f"{cookie.pair}; {access_name}={pool.valid_access[public_id]}") for public_id in pool.public_ids
    ]


def rotation_lines(
    pool: SessionPool, cookie: FlaskSessionCookie, *, with_expired_access: bool, seconds: float
) -> list[str]:
    """Lines for `seconds` of wrk at MAX_RPS and two passes more, each presenting one
    session's next fresh refresh token: sessions 1..N at the counters the database holds
    now, then 1..N at the next ones, and so on; none may be sent twice. With
    `with_expired_access`, each also carries an expired access cookie, as a browser's page
    load that must rotate does."""
    counters = pool.counters()
    passes = int(MAX_RPS * seconds / len(pool.public_ids)) + 2
    refresh_name, access_name = pool.app.cookie_name("refresh_token"), pool.app.cookie_name("access_token")
    lines = []
    for step in range(passes):
        for public_id in pool.public_ids:
            refresh = tokens.mint_refresh_token(public_id, counters[public_id] + step, keys=pool.app.policy.keys)
            parts = [cookie.pair]
            if with_expired_access:
                parts.append(f"{access_name}={pool.expired_access[public_id]}")
            parts.append(f"{refresh_name}={refresh}")
            lines.append(request_line("; ".join(parts)))
    return lines
