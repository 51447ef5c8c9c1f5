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
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENV_VAR = "TEST_DATABASE_URL"
SKIP_REASON = f"{ENV_VAR} is not set: the PostgreSQL variant needs a server (see README, Development)"


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


@contextmanager
def throwaway_database() -> Iterator[str]:
    """An empty database of our own on the TEST_DATABASE_URL server for the block, dropped
    afterwards; the test is skipped when no server is named."""
    if admin_url() is None:
        pytest.skip(SKIP_REASON)
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


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


class PrivateServer:
    """A PostgreSQL server of the test's own, in a temporary directory, that a test may
    stop and start again: a database outage without touching the shared server.

    `initdb` refuses to run as root, so under root the server runs as the `postgres`
    system user (through `runuser`).
    """

    def __init__(self, directory: Path, port: int):
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    @staticmethod
    def binaries() -> Path | None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
                return candidate
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None

    def _run(self, *command: str | Path, timeout: float = 60) -> None:
        command = [str(part) for part in command]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            self.binaries() / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            # No fsync (a test server), but commits reach the WAL: an immediate stop loses none.
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            self.binaries() / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.directory / "server.log",
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        # Immediate: connections are cut as in a crash or a network partition.
        self._run(self.binaries() / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
