"""Throwaway PostgreSQL databases for the tests, made through `TEST_DATABASE_URL`.

`TEST_DATABASE_URL` names a server and a database to connect to as an administrator
(CI: postgresql+psycopg://postgres@127.0.0.1:5432/test). Tests never touch that database
itself: each run creates `webapp_test_<random>` beside it and drops it at the end, so two
runs on one server cannot see each other. When the named database does not exist yet it
is created first (connecting through the `postgres` maintenance database).
"""

from __future__ import annotations

import os
import secrets

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_VAR = "TEST_DATABASE_URL"
SKIP_REASON = f"{ENV_VAR} is not set: the PostgreSQL variant needs a server (see README, Tests)"


def admin_url() -> str | None:
    """The administrator URL from the environment, or None when PostgreSQL is not wanted."""
    return os.environ.get(ENV_VAR, "").strip() or None


def _conninfo(url: str | URL, database: str | None = None) -> str:
    url = make_url(url)
    if database is not None:
        url = url.set(database=database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _connect_admin(url: str) -> psycopg.Connection:
    """An autocommit connection to the administrator database, creating it if missing."""
    try:
        return psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        name = make_url(url).database
        if not name or "does not exist" not in str(error):
            raise
    with psycopg.connect(_conninfo(url, "postgres"), autocommit=True, connect_timeout=10) as maintenance:
        try:
            maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another run created it first
    return psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=10)


def create_database(url: str | None = None) -> str:
    """Create an empty database of our own on the server; return its SQLAlchemy URL."""
    url = url or admin_url()
    name = f"webapp_test_{secrets.token_hex(6)}"
    with _connect_admin(url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str, url: str | None = None) -> None:
    """Drop a database made by `create_database`, disconnecting whoever is still in it."""
    url = url or admin_url()
    name = make_url(database_url).database
    assert name and name.startswith("webapp_test_"), f"refusing to drop {name!r}"
    with _connect_admin(url) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def terminate_connections(database_url: str) -> None:
    """Close every other connection to the database (what a server restart does to a pool)."""
    with psycopg.connect(_conninfo(database_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )


def empty_tables(database_url: str) -> None:
    """Delete every row but the migration version, and restart the id sequences.

    Connections a previous test leaked (an app it never disposed) are closed first, so
    none of them can hold a lock the TRUNCATE would wait for.
    """
    terminate_connections(database_url)
    with psycopg.connect(_conninfo(database_url), autocommit=True, connect_timeout=10) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(table) for table in tables)
                )
            )
