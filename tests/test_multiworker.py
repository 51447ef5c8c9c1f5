"""Several gunicorn worker processes on one database, as in production.

Rotation must stay race-free across processes (no lock in memory can help here: only the
database's compare-and-set does), a retired token must revoke the session on whichever
worker receives it, and sign-ups racing on one email must make one account. The server
is the real `gunicorn -w 4 wsgi:app` after `flask db upgrade`, on SQLite and, with
TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select, update

from webapp.models import SecurityEvent, Session, User

from . import postgres
from .conftest import PASSWORD, TEST_SECRET, csrf_token_from

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKERS = 4
PARALLEL = 50
# Seconds: far longer than the burst takes even on a loaded machine (about 1s was seen
# under load). The test never waits it out: it moves the rotation into the past.
REUSE_GRACE = 60
STARTUP_TIMEOUT = 60


@dataclass
class Server:
    base_url: str
    database_url: str
    access_log: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def worker_pids(self) -> set[str]:
        """Pids of the workers that answered requests so far, from the access log."""
        return {line.split()[0] for line in self.access_log.read_text().splitlines() if line.strip()}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server_database(request, tmp_path_factory):
    """An empty database: `flask db upgrade` is what creates the schema here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('multiworker') / 'app.sqlite3'}"
        return
    with postgres.throwaway_database() as url:
        yield url


@pytest.fixture(scope="module")
def server(server_database, tmp_path_factory):
    logs = tmp_path_factory.mktemp("gunicorn")
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": server_database,
        "BCRYPT_ROUNDS": "4",
        "REFRESH_REUSE_GRACE": str(REUSE_GRACE),
        # The sign-up race below makes 24 "email already exists" answers, each a failed
        # attempt against one account's sign-in budget. With memory:// every worker keeps
        # its own count and the kernel deals requests out at random, so the default limit
        # (10) would be hit on some runs and not others. The limits have their own tests.
        "LOGIN_LIMIT_PER_ACCOUNT": "1000 per minute",
        "LOGIN_LIMIT_PER_IP": "1000 per minute",
    }
    env.pop("FLASK_APP", None)  # the project root's wsgi.py must be found on its own
    upgrade = subprocess.run(
        [BIN / "flask", "db", "upgrade"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stderr

    error_log, access_log = logs / "error.log", logs / "access.log"
    access_log.touch()
    process = subprocess.Popen(
        [
            BIN / "gunicorn",
            "--bind",
            "127.0.0.1:0",  # the kernel picks a free port; the log says which
            "--workers",
            str(WORKERS),
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            "%(p)s %(s)s %(r)s",
            "--error-logfile",
            str(error_log),
            "--log-level",
            "info",
            "--timeout",
            "60",
            "wsgi:app",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base_url = _wait_until_serving(process, error_log)
        yield Server(base_url=base_url, database_url=server_database, access_log=access_log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(process: subprocess.Popen, error_log: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    base_url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{error_log.read_text()}")
        text = error_log.read_text() if error_log.exists() else ""
        if base_url is None and (match := re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", text)):
            base_url = match.group(1)
        if base_url and text.count("Booting worker") >= WORKERS:
            try:
                if requests.get(base_url + "/healthz", timeout=30).status_code == 200:
                    return base_url
            except (requests.ConnectionError, requests.Timeout):
                pass
        time.sleep(0.1)
    pytest.fail(
        f"gunicorn did not serve within {STARTUP_TIMEOUT}s:\n{error_log.read_text() if error_log.exists() else ''}"
    )


def query(database_url: str, statement):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()


def move_rotation_back(database_url: str, session_id: str, seconds: float) -> None:
    """Make the session's last rotation `seconds` older, as if that much time had passed
    since: the workers run on the wall clock, which a test cannot move."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            condition = Session.public_id == session_id
            rotated_at = connection.execute(select(Session.rotated_at).where(condition)).scalar_one()
            connection.execute(
                update(Session).where(condition).values(rotated_at=rotated_at - timedelta(seconds=seconds))
            )
    finally:
        engine.dispose()


def register(server: Server, email: str) -> requests.Session:
    """A browser that signed up through the form (CSRF included) and is signed in."""
    browser = requests.Session()
    token = csrf_token_from(browser.get(server.url("/auth/register"), timeout=30).text)
    response = browser.post(
        server.url("/auth/register"),
        data={"email": email, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text
    return browser


def in_parallel(count: int, call) -> list:
    """Run `call(i)` in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait(timeout=60)
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_fifty_parallel_requests_on_four_workers_rotate_once(server):
    browser = register(server, "rotation@example.com")
    parent = browser.cookies["refresh_token"]
    session_id = parent.split(".")[0]
    assert parent.startswith(f"{session_id}.0.")

    def present_parent(_):
        # A bare Cookie header and no access token: every request must go through rotation.
        response = requests.get(server.url("/api/me"), headers={"Cookie": f"refresh_token={parent}"}, timeout=60)
        return (
            response.status_code,
            response.json(),
            response.cookies.get("refresh_token"),
            response.cookies.get("access_token"),
        )

    started = time.monotonic()
    results = in_parallel(PARALLEL, present_parent)
    burst = time.monotonic() - started
    assert burst < REUSE_GRACE, f"the burst took {burst:.1f}s, longer than the grace window: machine overloaded?"

    assert [status for status, _, _, _ in results] == [200] * PARALLEL
    assert {body["session_id"] for _, body, _, _ in results} == {session_id}
    successors = {refresh for _, _, refresh, _ in results}
    assert len(successors) == 1 and None not in successors, successors
    successor = successors.pop()
    assert successor.startswith(f"{session_id}.1.")
    assert None not in {access for _, _, _, access in results}
    # More than one process answered: the race was between processes, not threads.
    assert len(server.worker_pids()) >= 2, server.worker_pids()

    [(counter, revoked_at)] = query(
        server.database_url, select(Session.counter, Session.revoked_at).where(Session.public_id == session_id)
    )
    assert (counter, revoked_at) == (1, None)
    reuse_events = query(
        server.database_url,
        select(func.count()).select_from(SecurityEvent).where(SecurityEvent.kind == "refresh_token_reused"),
    )
    assert reuse_events == [(0,)]

    # The parent after the grace window: reuse, whichever worker receives it.
    move_rotation_back(server.database_url, session_id, REUSE_GRACE + 1)
    reused = requests.get(server.url("/api/me"), headers={"Cookie": f"refresh_token={parent}"}, timeout=60)
    assert reused.status_code == 401
    cleared = [header for header in reused.raw.headers.getlist("Set-Cookie") if header.startswith("refresh_token=;")]
    assert cleared and "Max-Age=0" in cleared[0], reused.raw.headers
    [(revoked_at, reason)] = query(
        server.database_url, select(Session.revoked_at, Session.revoked_reason).where(Session.public_id == session_id)
    )
    assert revoked_at is not None and reason == "reuse"

    # Every worker now refuses the successor and the still-unexpired access token.
    access = results[0][3]

    def present_successor(index):
        cookie = f"refresh_token={successor}" if index % 2 else f"access_token={access}"
        return requests.get(server.url("/api/me"), headers={"Cookie": cookie}, timeout=60).status_code

    assert in_parallel(2 * WORKERS, present_successor) == [401] * (2 * WORKERS)


def test_parallel_sign_ups_with_one_email_make_one_account(server):
    email = "race@example.com"
    browsers = []
    for _ in range(PARALLEL // 2):
        browser = requests.Session()
        token = csrf_token_from(browser.get(server.url("/auth/register"), timeout=30).text)
        browsers.append((browser, token))

    def sign_up(index):
        browser, token = browsers[index]
        # Differently written, one normalised address.
        address = email.upper() if index % 2 else f"  {email}"
        response = browser.post(
            server.url("/auth/register"),
            data={"email": address, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
            allow_redirects=False,
            timeout=60,
        )
        return response.status_code, response.headers.get("Location"), response.text

    results = in_parallel(len(browsers), sign_up)

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * (len(browsers) - 1) + [302], statuses
    [(_, location, _)] = [result for result in results if result[0] == 302]
    assert location.endswith("/account")
    for status, _, text in results:
        if status == 200:
            assert "already exists" in text
    assert query(server.database_url, select(func.count()).select_from(User).where(User.email == email)) == [(1,)]
