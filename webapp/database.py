"""The database layer every other module builds on, with no Flask in it.

The declarative base (which Flask-SQLAlchemy adopts in `extensions.py`, so the models
and the engine import no Flask and their tests run on a plain SQLAlchemy session), the
timestamp type, SQLite's connection settings, and the unit of work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Session as DbSession

# Predictable constraint names, so Alembic migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database.

    SQLite has no time zone type and hands back naive values; this stores UTC and always
    returns aware datetimes, so comparisons never mix naive and aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@contextmanager
def unit_of_work(db_session: DbSession) -> Iterator[DbSession]:
    """Commit what the block wrote, or roll all of it back if the block raises.

    The engine's functions add and flush and never commit: the view, hook or command
    that calls them wraps the whole of one user action in this, so (for example) a new
    password, its event and the sessions it ends are one transaction. Unlike
    `Session.begin()`, it also takes over a transaction an earlier read began (the
    session begins one by itself on first use).
    """
    try:
        yield db_session
    except BaseException:
        db_session.rollback()
        raise
    db_session.commit()


SQLITE_BUSY_TIMEOUT_MS = 15_000


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection, connection_record):
    """WAL lets readers run beside the one writer and makes a commit cost one page
    append instead of a journal rewrite; the busy timeout makes parallel rotations wait
    for the write lock instead of failing."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
