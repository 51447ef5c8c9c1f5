"""The migrations build one schema on SQLite and on PostgreSQL, and it is the models'.

On an empty database of each kind the migrations run and autogenerate finds nothing to
change, and the two reflected schemas are compared with each other: same tables,
columns, nullability, keys, constraints and indexes, by name.
"""

from __future__ import annotations

import flask_migrate
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from webapp.extensions import db

from . import postgres
from .conftest import make_app


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    with postgres.throwaway_database() as url:
        yield url


def upgraded(url: str) -> dict:
    """Run every migration on the empty database at `url`; return its reflected schema."""
    app = make_app(url)
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
        flask_migrate.upgrade()
        schema = reflect(db.engine)
        db.engine.dispose()
    return schema


def reflect(engine) -> dict:
    inspector = inspect(engine)
    schema = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        uniques = {(u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)}
        schema[table] = {
            "columns": {
                column["name"]: (
                    type(column["type"].as_generic()).__name__,
                    getattr(column["type"], "length", None),
                    column["nullable"],
                )
                for column in inspector.get_columns(table)
            },
            "primary key": (
                inspector.get_pk_constraint(table)["name"],
                tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            ),
            "foreign keys": {
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    (fk.get("options") or {}).get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(table)
            },
            "unique constraints": uniques,
            # PostgreSQL lists the index behind each unique constraint too: count it once.
            "indexes": {
                (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table)
                if not index.get("duplicates_constraint")
            },
        }
    return schema


def test_migrations_build_exactly_the_models_schema(empty_database_url):
    app = make_app(empty_database_url)
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
        flask_migrate.upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, db.metadata)
        db.engine.dispose()
    assert differences == []


def test_migrations_downgrade_to_nothing_and_back(empty_database_url):
    app = make_app(empty_database_url)
    with app.app_context():
        flask_migrate.upgrade()
        flask_migrate.downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        flask_migrate.upgrade()
        assert {"users", "sessions", "security_events"} <= set(inspect(db.engine).get_table_names())
        db.engine.dispose()


@pytest.mark.postgres
def test_sqlite_and_postgresql_get_the_same_schema(tmp_path):
    with postgres.throwaway_database() as url:
        postgresql_schema = upgraded(url)
    sqlite_schema = upgraded(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert {"users", "sessions", "security_events"} <= set(sqlite_schema)
    assert postgresql_schema == sqlite_schema
