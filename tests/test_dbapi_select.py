"""The auth hook's fast path: `authenticate` given the engine runs its liveness check
straight on a pooled DB-API connection (webapp/dbapi_select.py). It must answer exactly as
the SQLAlchemy path does, and fail the way the app knows how to handle."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, literal_column, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from webapp import accounts, sessions, tokens
from webapp.database import unit_of_work
from webapp.dbapi_select import DBAPISelect
from webapp.devices import Device
from webapp.extensions import db
from webapp.models import SecurityEvent, Session
from webapp.security_events import EventKind, list_security_events, record_event
from webapp.session_queries import ACTIVE_SESSION
from webapp.sessions import SessionInactive

from . import postgres
from .conftest import PASSWORD, make_app


@pytest.fixture
def issued(ctx, policy, clock):
    with unit_of_work(db.session):
        user = accounts.create_user(db.session, "alice@example.com", PASSWORD, rounds=4, now=clock())
        return sessions.start_session(db.session, user, policy=policy, now=clock(), device=Device("UA", "127.0.0.1"))


def check_both_ways(token, policy, now):
    """`authenticate` given the engine, against the same liveness query run by SQLAlchemy
    Core itself on the ORM session's connection: the same answer."""
    claims = tokens.decode_access_token(
        token, keys=policy.keys, now=int(now.timestamp()), issuer=policy.issuer, audience=policy.audience
    )
    params = {"public_id": claims.session_id, "user_id": claims.user_id, "now": now}
    by_core = db.session.connection().execute(ACTIVE_SESSION, params).one_or_none()
    db.session.rollback()
    try:
        signed_in = sessions.authenticate(db.engine, token, policy=policy, now=now)
    except SessionInactive:
        assert by_core is None
        return "inactive"
    assert by_core is not None
    assert (signed_in.session_pk, signed_in.last_active_at, signed_in.client_name, signed_in.email) == (
        by_core.id,
        by_core.last_active_at,
        by_core.client_name,
        by_core.email,
    )
    # The ORM session's own connection gives the same too.
    assert sessions.authenticate(db.session, token, policy=policy, now=now) == signed_in
    db.session.rollback()
    return signed_in


def test_the_engine_path_signs_in_the_same_user_with_the_same_times(issued, policy, clock):
    signed_in = check_both_ways(issued.access_token, policy, clock())
    assert signed_in.email == "alice@example.com"
    assert signed_in.session_id == issued.session_id
    # Times come back aware and in UTC on SQLite and PostgreSQL alike.
    assert signed_in.last_active_at == clock() and signed_in.last_active_at.utcoffset().total_seconds() == 0


def test_the_engine_path_ends_a_session_at_its_idle_limit_to_the_microsecond(issued, policy, clock):
    idle_end = db.session.execute(
        select(Session.idle_expires_at).where(Session.public_id == issued.session_id)
    ).scalar_one()
    # An access token still valid past the idle limit: only the session's times decide,
    # compared in the database (as text on SQLite) with `now` bound by the column type.
    token = tokens.encode_access_token(
        user_id=issued.user_id,
        session_id=issued.session_id,
        counter=0,
        keys=policy.keys,
        issuer=policy.issuer,
        audience=policy.audience,
        issued_at=int(clock().timestamp()),
        expires_at=int(idle_end.timestamp()) + 3600,
    )
    just_before = idle_end - timedelta(microseconds=1)
    assert check_both_ways(token, policy, just_before).session_id == issued.session_id
    assert check_both_ways(token, policy, idle_end) == "inactive"


def test_the_engine_path_refuses_a_revoked_session(issued, policy, clock):
    db.session.execute(update(Session).where(Session.public_id == issued.session_id).values(revoked_at=clock()))
    db.session.commit()
    assert check_both_ways(issued.access_token, policy, clock()) == "inactive"


@pytest.mark.parametrize(
    "dead_url",
    [
        "sqlite:////nonexistent-directory/app.sqlite3",
        f"postgresql+psycopg://postgres@127.0.0.1:{postgres.free_port()}/gone?connect_timeout=2",
    ],
    ids=["unreachable-sqlite", "unreachable-postgresql"],
)
def test_the_engine_path_reports_an_unreachable_database_as_operational_error(issued, policy, clock, dead_url):
    # OperationalError is what the app answers with 503 and untouched cookies.
    unreachable = create_engine(dead_url, hide_parameters=True)
    try:
        with pytest.raises(OperationalError) as raised:
            sessions.authenticate(unreachable, issued.access_token, policy=policy, now=clock())
        # The message is logged: like every SQL error here it names no parameter values.
        assert issued.session_id not in str(raised.value)
    finally:
        unreachable.dispose()


@pytest.mark.postgres
def test_a_connection_killed_under_the_pool_fails_once_then_is_replaced(migrated_postgres_database, clock, caplog):
    url = migrated_postgres_database
    postgres.empty_tables(url)
    app = make_app(url, clock)
    with app.app_context():
        policy = app.extensions["session_policy"]
        user = accounts.create_user(db.session, "alice@example.com", PASSWORD, rounds=4, now=clock())
        issued = sessions.start_session(db.session, user, policy=policy, now=clock(), device=Device("UA", "1.2.3.4"))
        db.session.commit()
        db.engine.dispose()
    # No checkout ping: the dead connection is handed out, as happens between a server
    # restart and the pool noticing.
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        sessions.authenticate(engine, issued.access_token, policy=policy, now=clock())
        postgres.terminate_connections(url)  # the pooled one among them

        with pytest.raises(OperationalError):
            sessions.authenticate(engine, issued.access_token, policy=policy, now=clock())
        # The dead connection was invalidated, not put back: the next call reconnects,
        # and the pool did not have to find out itself (an ERROR with a traceback).
        assert not [record for record in caplog.records if record.levelname == "ERROR"], caplog.text
        signed_in = sessions.authenticate(engine, issued.access_token, policy=policy, now=clock())
        assert signed_in.session_id == issued.session_id
    finally:
        engine.dispose()


def test_a_query_interrupted_midway_never_goes_back_to_the_pool(tmp_path):
    # A worker timeout or Ctrl-C lands in the middle of `execute`: that connection's
    # state is unknown, so the next lookup must get a fresh one.
    interrupt = []

    class Cursor(sqlite3.Cursor):
        def execute(self, *args):
            if interrupt:
                raise KeyboardInterrupt
            return super().execute(*args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Cursor):
            return super().cursor(factory)

    opened = []

    def connect():
        opened.append(sqlite3.connect(tmp_path / "db.sqlite3", factory=Connection, check_same_thread=False))
        return opened[-1]

    engine = create_engine("sqlite://", creator=connect, poolclass=QueuePool)
    lookup = DBAPISelect(select(literal_column("1").label("one")))
    try:
        assert lookup.one_or_none(engine, {}) == (1,) and len(opened) == 1
        interrupt.append(True)
        with pytest.raises(KeyboardInterrupt):
            lookup.one_or_none(engine, {})
        interrupt.clear()
        assert lookup.one_or_none(engine, {}) == (1,)
        assert len(opened) == 2, "the interrupted connection was handed out again"
    finally:
        engine.dispose()


def test_a_page_list_reads_the_latest_events_in_order_as_the_orm_does(ctx, issued, clock):
    """The account page's list of security events (a LIMIT, and the OFFSET 0 SQLite's
    compiler adds beside it) gives what the ORM gives, newest first, on both databases."""
    with unit_of_work(db.session):
        for minutes, kind in enumerate([EventKind.SIGNED_OUT, EventKind.PASSWORD_CHANGED, EventKind.SESSION_REVOKED]):
            record_event(db.session, user_id=issued.user_id, kind=kind, now=clock() + timedelta(minutes=minutes + 1))
    by_orm = list(
        db.session.scalars(
            select(SecurityEvent)
            .where(SecurityEvent.user_id == issued.user_id)
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc())
            .limit(3)
        )
    )
    with db.engine.connect() as connection:
        latest = list_security_events(connection, user_id=issued.user_id, limit=3)
    assert [(row.id, row.kind, row.created_at) for row in latest] == [
        (event.id, event.kind, event.created_at) for event in by_orm
    ]
    assert [row.kind for row in latest] == ["session_revoked", "password_changed", "signed_out"]
    assert latest[0].created_at == clock() + timedelta(minutes=3)
    # The start of the list, not all of it: the sign-in's own event is the fourth.
    assert len(list_security_events(db.session, user_id=issued.user_id, limit=20)) == 4
