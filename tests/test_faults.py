"""Faults: the database going away and coming back, the rate-limit store going away, and a
crash in the middle of a rotation.

An outage of ours must never sign anybody out: while the database is gone every page that
needs it answers 503 and leaves the cookies alone, and afterwards the same browser simply
carries on. A rotation is one transaction, so a crash inside it leaves the session as it
was and the token the browser holds still works.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from webapp import accounts, sessions, tokens
from webapp.extensions import db
from webapp.models import Session

from . import postgres
from .conftest import PASSWORD, AuthActions, cookie_value, make_app, migrate_database, set_cookie_headers

AUTH_COOKIES = ("access_token", "refresh_token")
# Pages that need the database for a signed-in browser (the hook looks its session up).
DATABASE_PAGES = ["/", "/account", "/account/sessions", "/api/me", "/healthz"]


def auth_cookie_headers(response) -> dict[str, str]:
    return {name: header for name, header in set_cookie_headers(response).items() if name in AUTH_COOKIES}


def session_row(app, public_id: str) -> tuple[int, object]:
    with app.app_context():
        row = db.session.execute(
            select(Session.counter, Session.revoked_at).where(Session.public_id == public_id)
        ).one()
        db.session.remove()
        return tuple(row)


# --- the database goes away and comes back ------------------------------------------------


@pytest.fixture(scope="module")
def private_postgres():
    """A PostgreSQL server of this module's own, so stopping it disturbs nobody."""
    if postgres.PrivateServer.binaries() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    # Not under pytest's tmp_path: its parents are private to root, and under root the
    # server runs as the postgres user, which must reach its data directory.
    directory = Path(tempfile.mkdtemp(prefix="webapp-faults-pg-"))
    server = postgres.PrivateServer(directory, postgres.free_port())
    try:
        server.init()
        server.start()
        migrate_database(make_app(server.url))
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def outage_app(private_postgres, clock):
    postgres.empty_tables(private_postgres.url)
    app = make_app(private_postgres.url, clock)
    yield app
    if not private_postgres.is_running():
        private_postgres.start()


def test_database_outage_is_503_then_the_same_browser_carries_on(private_postgres, outage_app, clock):
    client = outage_app.test_client()
    AuthActions(client).register()
    session_id = client.get("/api/me").get_json()["session_id"]
    cookies_before = {name: cookie_value(client, name) for name in AUTH_COOKIES}

    private_postgres.stop()
    for path in DATABASE_PAGES:
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "5", path
        assert auth_cookie_headers(response) == {}, path
        if path in ("/api/me", "/healthz"):
            assert response.get_json()["error"] == "unavailable"
        else:
            assert response.mimetype == "text/html"
    # The access token runs out during the outage: the silent rotation cannot happen,
    # and that is still no reason to sign anybody out.
    clock.advance(outage_app.config["ACCESS_TOKEN_TTL"] + 1)
    response = client.get("/account")
    assert response.status_code == 503
    assert auth_cookie_headers(response) == {}
    assert {name: cookie_value(client, name) for name in AUTH_COOKIES} == cookies_before

    private_postgres.start()
    response = client.get("/api/me")
    assert response.status_code == 200
    assert response.get_json()["session_id"] == session_id
    # It was renewed from the refresh cookie it kept through the outage.
    assert set(auth_cookie_headers(response)) == set(AUTH_COOKIES)
    assert session_row(outage_app, session_id) == (1, None)
    assert client.get("/healthz").status_code == 200


def test_a_sign_in_during_the_outage_is_503_and_works_afterwards(private_postgres, outage_app):
    client = outage_app.test_client()
    auth = AuthActions(client)
    auth.register()
    auth.logout()
    token = auth.csrf_token()

    private_postgres.stop()
    response = client.post(
        "/auth/login", data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 503
    assert auth_cookie_headers(response) == {}

    private_postgres.start()
    assert auth.login().status_code == 302
    assert client.get("/api/me").status_code == 200


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["/api/security-events", "/account/sessions", "/account"])
def test_the_database_going_away_after_the_last_query_is_not_a_500(migrated_postgres_database, clock, path):
    """A server restart that closes the connection between a view's last query and the end
    of its request (when the ORM session is rolled back and put away) costs that request
    nothing: the answer was made, and it goes out."""
    postgres.empty_tables(migrated_postgres_database)
    app = make_app(migrated_postgres_database, clock)
    restarting = []

    @app.after_request
    def restart_the_server_now(response):
        if restarting:
            postgres.terminate_connections(migrated_postgres_database)
        return response

    client = app.test_client()
    AuthActions(client).register()
    restarting.append(True)
    response = client.get(path)
    assert response.status_code == 200
    restarting.clear()
    assert client.get(path).status_code == 200  # and the next request finds a live connection
    with app.app_context():
        db.engine.dispose()


def test_a_closing_rollback_that_fails_gives_its_connection_back(app, client):
    """Not a lost connection (SQLAlchemy would throw that one away itself): a rollback the
    driver refuses at the end of a request. The answer still goes out, and the connection
    is not left checked out of the pool, request after request."""
    armed = []

    @app.after_request
    def refuse_the_next_rollback(response):
        armed.append(True)
        return response

    AuthActions(client).register()
    armed.clear()
    with app.app_context():
        dialect, pool = db.engine.dialect, db.engine.pool
    original = dialect.do_rollback

    def refusing_rollback(dbapi_connection):
        if armed:
            armed.clear()
            raise dialect.loaded_dbapi.OperationalError("rollback refused (not a disconnect)")
        return original(dbapi_connection)

    dialect.do_rollback = refusing_rollback
    try:
        checked_out = []
        for _ in range(3):
            assert client.get("/account/sessions").status_code == 200
            checked_out.append(pool.checkedout())
    finally:
        dialect.do_rollback = original
    assert checked_out == [0, 0, 0]


# --- the rate-limit store goes away --------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, which the test may kill and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = postgres.free_port()
    processes = []

    def start():
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=port, socket_connect_timeout=0.2) as connection:
                    connection.ping()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail("private redis-server did not start")

    def stop():
        processes[-1].terminate()
        processes[-1].wait(timeout=10)

    start()
    yield f"redis://127.0.0.1:{port}/0", stop, start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sign_in_fails_open_while_redis_is_gone_and_limits_return_with_it(database_url, clock, private_redis, caplog):
    storage_uri, stop_redis, start_redis = private_redis
    app = make_app(database_url, clock, RATELIMIT_STORAGE_URI=storage_uri, LOGIN_LIMIT_PER_ACCOUNT="2 per 15 minutes")
    AuthActions(app.test_client()).register()
    auth = AuthActions(app.test_client())

    assert auth.login(password="wrong password").status_code == 200
    stop_redis()
    with caplog.at_level(logging.WARNING):
        # Beyond the limit, and nothing can count: fail open, never lock everybody out.
        for _ in range(3):
            assert auth.login(password="wrong password").status_code == 200
        assert auth.login().status_code == 302
        assert auth.client.get("/api/me").status_code == 200
        # Said once, as a warning an operator can read, not a traceback per sign-in.
        outage_lines = [record for record in caplog.records if record.name == "flask-limiter"]
        assert [(record.levelno, record.exc_info) for record in outage_lines] == [(logging.WARNING, None)]
        assert "sign-in limits are off" in outage_lines[0].getMessage()
        # And again a minute later, while it lasts.
        clock.advance(61)
        assert AuthActions(app.test_client()).login(password="wrong password").status_code == 200
        assert len([record for record in caplog.records if record.name == "flask-limiter"]) == 2

    start_redis()  # empty, as after a restart: counting starts again
    other = AuthActions(app.test_client())
    statuses = [other.login(password="wrong password").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# --- a crash in the middle of a rotation -----------------------------------------------------


def signed_in_with_expired_access(app, client, clock) -> tuple[str, str]:
    AuthActions(client).register()
    session_id = client.get("/api/me").get_json()["session_id"]
    refresh_token = cookie_value(client, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    return session_id, refresh_token


def test_a_crash_before_the_successor_is_issued_leaves_the_session_unrotated(app, client, clock, monkeypatch):
    session_id, parent = signed_in_with_expired_access(app, client, clock)

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed mid-rotation")

    monkeypatch.setattr(tokens, "mint_refresh_token", crash)
    with pytest.raises(RuntimeError):
        client.get("/api/me")  # the test app propagates the exception instead of a 500
    monkeypatch.undo()

    assert session_row(app, session_id) == (0, None)
    assert cookie_value(client, "refresh_token") == parent
    # Long after any grace window, the token the browser kept is still the current one.
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 60)
    response = client.get("/api/me")
    assert response.status_code == 200
    assert response.get_json()["session_id"] == session_id
    assert session_row(app, session_id) == (1, None)


def test_a_failed_commit_of_a_rotation_is_503_and_changes_nothing(app, client, clock, monkeypatch):
    session_id, parent = signed_in_with_expired_access(app, client, clock)

    def lost_connection():
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    with app.app_context():
        monkeypatch.setattr(db.session, "commit", lost_connection)
        response = client.get("/account")
    monkeypatch.undo()
    assert response.status_code == 503
    assert auth_cookie_headers(response) == {}
    assert session_row(app, session_id) == (0, None)

    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 60)
    assert client.get("/account").status_code == 200
    assert session_row(app, session_id) == (1, None)
    assert cookie_value(client, "refresh_token") != parent


def test_engine_rotation_is_all_or_nothing(app, clock, monkeypatch):
    """The same at the engine: an error after the compare-and-set rolls it back."""
    with app.app_context():
        policy = app.extensions["session_policy"]
        user = accounts.create_user(db.session, "bob@example.com", PASSWORD, rounds=4, now=clock())
        issued = sessions.start_session(db.session, user, policy=policy, now=clock())
        db.session.commit()

        def crash(**kwargs):
            raise RuntimeError("worker killed mid-rotation")

        monkeypatch.setattr(tokens, "encode_access_token", crash)
        with pytest.raises(RuntimeError):
            sessions.rotate_refresh_token(db.session, issued.refresh_token, policy=policy, now=clock())
        db.session.rollback()  # what the end of the request does
        monkeypatch.undo()
        row = db.session.execute(select(Session.counter).where(Session.public_id == issued.session_id)).scalar_one()
        assert row == 0
        rotated = sessions.rotate_refresh_token(db.session, issued.refresh_token, policy=policy, now=clock())
        assert rotated.refresh_token.startswith(f"{issued.session_id}.1.")
        db.session.remove()
