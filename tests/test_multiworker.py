"""Several gunicorn worker processes on one database, as in production.

Rotation must stay race-free across processes (no lock in memory can help here: only the
database's compare-and-set does), a retired token must revoke the session on whichever
worker receives it, and sign-ups racing on one email must make one account. The server
is the real `gunicorn -w 4 wsgi:app` after `flask db upgrade`, on SQLite and, with
TEST_DATABASE_URL, on PostgreSQL. The same rotation race between the threads of one
process, which share the engine's pool and the app's caches, runs on Werkzeug's threaded
server.
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
from werkzeug.serving import make_server

from webapp.models import SecurityEvent, Session, User

from . import postgres
from .conftest import PASSWORD, TEST_SECRET, csrf_token_from, make_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKERS = 4
PARALLEL = 50
# Seconds: far longer than the burst takes even on a loaded machine (about 1s was seen
# under load). The test never waits it out: it moves the rotation into the past.
REUSE_GRACE = 60
STARTUP_TIMEOUT = 60
# The kernel decides which worker accepts each connection. A worker still importing the
# app after "Booting worker" (a fresh clone has no bytecode yet), or descheduled on a busy
# machine, can leave one worker to answer a whole burst, one request after another: then
# no two processes raced, and the burst is tried again, after a pause, on a new session.
MAX_BURSTS = 10
PAUSE_BETWEEN_BURSTS = 1
# A worker writes its access log line after sending the response.
ACCESS_LOG_TIMEOUT = 30


@dataclass
class Server:
    base_url: str
    database_url: str
    access_log: Path | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def workers_that_answered(self, target: str, count: int) -> set[str]:
        """Pids of the workers that answered the `count` requests for `target` (a path
        with its query string), read from the access log once all of them are there."""
        deadline = time.monotonic() + ACCESS_LOG_TIMEOUT
        while True:
            # "%(p)s %(s)s %(r)s": pid, status, request line ("GET /path?query HTTP/1.1").
            lines = [line.split() for line in self.access_log.read_text().splitlines()]
            pids = [fields[0] for fields in lines if len(fields) == 5 and fields[3] == target]
            if len(pids) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(pids) == count, f"the access log shows {len(pids)} requests for {target}, not {count}"
        return set(pids)


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
        # Four processes on memory:// limits, which gunicorn.conf.py refuses unless told:
        # the limits are lifted below anyway.
        "ALLOW_PER_PROCESS_LIMITS": "on",
        # The sign-up race below makes 24 "email already exists" answers, each a failed
        # attempt against one account's sign-in budget. With memory:// every worker keeps
        # its own count and the kernel deals requests out at random, so the default limit
        # (10) would be hit on some runs and not others. The limits have their own tests.
        # The rotation test may sign in up to MAX_BURSTS times too.
        "LOGIN_LIMIT_PER_ACCOUNT": "1000 per minute",
        "LOGIN_LIMIT_PER_IP": "1000 per minute",
        "SIGN_IN_ATTEMPTS_PER_IP": "1000 per minute",
        "NEW_SESSIONS_PER_USER_PER_HOUR": "1000",
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


@pytest.fixture
def threaded_server(database_url):
    """The app in one process on Werkzeug's threaded server, on a migrated database."""
    # The real clock: this is a real server, as gunicorn's workers are.
    app = make_app(database_url, environ={"REFRESH_REUSE_GRACE": str(REUSE_GRACE)})
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(base_url=f"http://127.0.0.1:{http.server_port}", database_url=database_url)
    finally:
        http.shutdown()
        thread.join()
        http.server_close()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


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


def submit_sign_in_form(server: Server, path: str, **fields: str) -> requests.Session:
    """A new browser that sent the form at `path` (CSRF included) and is signed in."""
    browser = requests.Session()
    token = csrf_token_from(browser.get(server.url(path), timeout=30).text)
    response = browser.post(server.url(path), data={**fields, "csrf_token": token}, allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text
    return browser


def register(server: Server, email: str) -> requests.Session:
    return submit_sign_in_form(server, "/auth/register", email=email, password=PASSWORD, confirm=PASSWORD)


def sign_in(server: Server, email: str) -> requests.Session:
    return submit_sign_in_form(server, "/auth/login", email=email, password=PASSWORD)


def in_parallel(count: int, call) -> list:
    """Run `call(i)` in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait(timeout=60)
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def rotate_in_parallel(server: Server, refresh_token: str, target: str = "/api/me") -> tuple[str, str]:
    """Present `refresh_token` in PARALLEL requests at once and check that the session
    rotated exactly once, every request was served, and exactly one answer (the
    rotation's) set the successor: the others leave the browser's refresh cookie alone.
    Returns the successor and the access token issued with it."""
    session_id = refresh_token.split(".")[0]
    assert refresh_token.startswith(f"{session_id}.0.")

    def present_parent(_):
        # A bare Cookie header and no access token: every request must go through rotation.
        response = requests.get(server.url(target), headers={"Cookie": f"refresh_token={refresh_token}"}, timeout=60)
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
    successors = [(refresh, access) for _, _, refresh, access in results if refresh is not None]
    assert len(successors) == 1, successors
    [(successor, successor_access)] = successors
    assert successor.startswith(f"{session_id}.1.")
    assert None not in {access for _, _, _, access in results}

    [(counter, revoked_at)] = query(
        server.database_url, select(Session.counter, Session.revoked_at).where(Session.public_id == session_id)
    )
    assert (counter, revoked_at) == (1, None)
    reuse_events = query(
        server.database_url,
        select(func.count()).select_from(SecurityEvent).where(SecurityEvent.kind == "refresh_token_reused"),
    )
    assert reuse_events == [(0,)]
    return successor, successor_access


def test_fifty_parallel_requests_on_four_workers_rotate_once(server):
    email = "rotation@example.com"
    browser = register(server, email)
    for burst in range(1, MAX_BURSTS + 1):
        if burst > 1:
            time.sleep(PAUSE_BETWEEN_BURSTS)
            browser = sign_in(server, email)
        parent = browser.cookies["refresh_token"]
        # The query string marks this burst's lines in the access log; /api/me ignores it.
        target = f"/api/me?burst={burst}"
        successor, access = rotate_in_parallel(server, parent, target)
        workers = server.workers_that_answered(target, PARALLEL)
        # Two processes or more answered: the rotation raced between processes.
        if len(workers) >= 2:
            break
    else:
        pytest.fail(
            f"in each of {MAX_BURSTS} bursts of {PARALLEL} parallel requests one worker of {WORKERS} answered "
            "every request: the race between processes never happened"
        )
    session_id = parent.split(".")[0]

    # The browser's next request carries the new access token: the rotation reached it.
    delivered = requests.get(server.url("/api/me"), headers={"Cookie": f"access_token={access}"}, timeout=60)
    assert delivered.status_code == 200
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

    # The workers now refuse the successor and the still-unexpired access token.
    def present_successor(index):
        cookie = f"refresh_token={successor}" if index % 2 else f"access_token={access}"
        return requests.get(server.url("/api/me"), headers={"Cookie": cookie}, timeout=60).status_code

    assert in_parallel(2 * WORKERS, present_successor) == [401] * (2 * WORKERS)


def test_fifty_parallel_requests_on_one_threaded_process_rotate_once(threaded_server):
    browser = register(threaded_server, "threads@example.com")
    rotate_in_parallel(threaded_server, browser.cookies["refresh_token"])


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
