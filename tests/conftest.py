"""Fixtures: an app on a migrated SQLite file, a fake clock, a client and an `auth` helper.

The schema comes from the migrations, never from `create_all`: a template database is
migrated once per test run and copied for each test. With TEST_DATABASE_URL set, the same
tests run again on PostgreSQL, in a database of the run's own (`tests/postgres.py`).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import flask_migrate
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import create_engine
from sqlalchemy.orm import Session as DbSession

from webapp import create_app
from webapp.config import engine_options, load_config
from webapp.extensions import db
from webapp.sessions import SessionPolicy

from . import postgres

TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct horse battery staple"
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


class FakeClock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def base_environ(**overrides: str) -> dict[str, str]:
    environ = {"APP_ENV": "testing", "SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4"}
    environ.update(overrides)
    return environ


def make_app(database_url: str, clock: FakeClock | None = None, environ: dict | None = None, **config):
    test_config = {"SQLALCHEMY_DATABASE_URI": database_url, **config}
    if clock is not None:
        test_config["CLOCK"] = clock
    return create_app(test_config, environ=base_environ(**(environ or {})))


def migrate_database(app) -> None:
    with app.app_context():
        flask_migrate.upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    migrate_database(make_app(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def migrated_postgres_database() -> str:
    """A database of this run's own on the TEST_DATABASE_URL server, migrated once,
    dropped at the end of the run."""
    with postgres.throwaway_database() as url:
        migrate_database(make_app(url))
        yield url


# Every test that uses `database_url` (and so `app` and `client`) runs on SQLite, and on
# PostgreSQL too when TEST_DATABASE_URL is set. `-m "not postgres"` leaves PostgreSQL out.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        url = request.getfixturevalue("migrated_postgres_database")
        postgres.empty_tables(url)
        return url
    path = tmp_path / "app.sqlite3"
    shutil.copy(request.getfixturevalue("migrated_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_config() -> dict:
    """Override in a test module to change settings of the `app` fixture."""
    return {}


@pytest.fixture
def app(database_url, clock, app_config):
    app = make_app(database_url, clock, **app_config)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def ctx(app):
    """The `app` fixture with its app context pushed, for engine-level tests."""
    with app.app_context():
        yield app


@pytest.fixture
def db_session(database_url):
    """A plain SQLAlchemy session on the migrated test database, with no Flask app: the
    engine and the models need none."""
    engine = create_engine(database_url, **engine_options(database_url))
    with DbSession(engine) as db_session:
        yield db_session
    engine.dispose()


@pytest.fixture
def policy(tmp_path) -> SessionPolicy:
    """The session policy of the default settings (the tests' secret)."""
    return SessionPolicy.from_config(load_config(base_environ(), tmp_path))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_token_from(html: bytes | str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    field = soup.find("input", {"name": "csrf_token"})
    if field is not None:
        return field["value"]
    return soup.find("meta", {"name": "csrf-token"})["content"]


class AuthActions:
    """Register, sign in and out through the real forms, CSRF included."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/auth/login") -> str:
        return csrf_token_from(self.client.get(path).data)

    def register(self, email: str = "alice@example.com", password: str = PASSWORD, confirm: str | None = None):
        token = self.csrf_token("/auth/register")
        return self.client.post(
            "/auth/register",
            data={
                "email": email,
                "password": password,
                "confirm": password if confirm is None else confirm,
                "csrf_token": token,
            },
        )

    def login(
        self,
        email: str = "alice@example.com",
        password: str = PASSWORD,
        remember: bool = False,
        next: str | None = None,
    ):
        path = "/auth/login" if next is None else f"/auth/login?next={next}"
        data = {"email": email, "password": password, "csrf_token": self.csrf_token(path)}
        if remember:
            data["remember"] = "y"
        return self.client.post(path, data=data)

    def logout(self):
        # A page with a form for anybody, signed in or not.
        return self.client.post("/auth/logout", data={"csrf_token": self.csrf_token("/auth/forgot")})


@pytest.fixture
def auth(client) -> AuthActions:
    return AuthActions(client)


def cookie_value(client, name: str) -> str | None:
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def set_cookie_headers(response) -> dict[str, str]:
    """`Set-Cookie` headers of a response, by cookie name."""
    headers = {}
    for header in response.headers.getlist("Set-Cookie"):
        headers[header.split("=", 1)[0]] = header
    return headers
