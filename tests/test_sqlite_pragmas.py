"""SQLite connections as the app opens them. (That the migrations build exactly the
models' schema, on SQLite and on PostgreSQL, is proven in test_postgres_schema.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from webapp.extensions import db


def test_sqlite_connections_use_wal_normal_sync_and_a_busy_timeout(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite pragmas")
    with app.app_context(), db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
