"""The server `make run` starts: clients that send half a request and stall must not
stall it for everybody else.

The command line is the Makefile's own (`make -n run` prints it with its variables
expanded), run from the project root as `make run` runs it, so gunicorn reads
`gunicorn.conf.py` there just the same. Only the port (the kernel picks a free one) and
the database (a temporary SQLite file) are the test's.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .conftest import TEST_SECRET

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 60
# A request from a well-behaved client beside the stalled ones: answered at once, and
# in any case far sooner than gunicorn's worker timeout (30 s), which is what finally
# frees a sync worker held by a stalled client.
ANSWER_WITHIN = 3
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


@dataclass
class Server:
    base_url: str
    host: str
    port: int
    workers: int
    access_log: Path


def make_run_gunicorn_command() -> list[str]:
    """The gunicorn command of `make run` on 127.0.0.1 and a free port, as make expands
    it (`-n`: nothing is run), with the gunicorn of the interpreter running the tests."""
    # Flags of an outer `make test` must not reach this make.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", "HOST=127.0.0.1", "PORT=0"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "gunicorn" in line]
    assert len(lines) == 1, f"expected one gunicorn command in `make -n run`:\n{result.stdout}"
    command = shlex.split(lines[0])
    assert Path(command[0]).name == "gunicorn", f"not a plain gunicorn command line: {lines[0]}"
    return [str(BIN / "gunicorn"), *command[1:]]


def worker_count(command: list[str]) -> int:
    for index, argument in enumerate(command):
        if argument in ("-w", "--workers"):
            return int(command[index + 1])
        if argument.startswith("--workers="):
            return int(argument.partition("=")[2])
    return 1  # gunicorn's default, and gunicorn.conf.py sets no other


def make_run_environ(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a `make run` started by a test: the test settings, a SQLite
    database of its own, and the defaults (wsgi.py, memory:// limits) unless `settings`
    name others."""
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
        "BCRYPT_ROUNDS": "4",
    }
    for name in ("FLASK_APP", "RATELIMIT_STORAGE_URI", "ALLOW_PER_PROCESS_LIMITS"):
        env.pop(name, None)
    return {**env, **settings}


def flask_command(env: dict[str, str], *arguments: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [BIN / "flask", *arguments], cwd=PROJECT_ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


@contextmanager
def gunicorn(
    command: list[str], env: dict[str, str], error_log: Path, access_log: Path | None = None
) -> Iterator[subprocess.Popen]:
    """`command` running from the project root, its error log in `error_log` (and what it
    prints, `make run`'s access log, in `access_log`); stopped (and, if it will not stop,
    killed) on the way out."""
    with error_log.open("w") as log, open(access_log or os.devnull, "w") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def make_run_server(tmp_path) -> Iterator[Server]:
    command = make_run_gunicorn_command()
    env = make_run_environ(tmp_path)
    flask_command(env, "db", "upgrade")
    # gunicorn's error log goes to stderr unless told otherwise: into a file, to read.
    error_log = tmp_path / "gunicorn.log"
    access_log = tmp_path / "access.log"
    with gunicorn(command, env, error_log, access_log) as process:
        workers = worker_count(command)
        base_url = wait_until_serving(process, error_log, workers)
        host, port = base_url.removeprefix("http://").split(":")
        yield Server(base_url=base_url, host=host, port=int(port), workers=workers, access_log=access_log)


def wait_until_serving(process: subprocess.Popen, error_log: Path, workers: int) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    base_url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{error_log.read_text()}")
        text = error_log.read_text()
        if base_url is None and (match := re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", text)):
            base_url = match.group(1)
        if base_url and text.count("Booting worker") >= workers:
            try:
                if requests.get(base_url + "/healthz", timeout=10).status_code == 200:
                    return base_url
            except (requests.ConnectionError, requests.Timeout):
                pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not serve within {STARTUP_TIMEOUT}s:\n{error_log.read_text()}")


def test_clients_that_stall_mid_request_do_not_stall_the_server(make_run_server):
    server = make_run_server
    # One more than there are worker processes: enough to hold every sync worker.
    stalled = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(server.workers + 1)]
    try:
        for connection in stalled:
            connection.sendall(HALF_A_REQUEST)
        started = time.monotonic()
        try:
            response = requests.get(server.base_url + "/healthz", timeout=ANSWER_WITHIN)
        except requests.Timeout:
            pytest.fail(
                f"/healthz went unanswered for {ANSWER_WITHIN}s while {len(stalled)} clients stalled mid-request "
                f"on {server.workers} worker(s)"
            )
        assert response.status_code == 200
        assert time.monotonic() - started < ANSWER_WITHIN
    finally:
        # Closed before gunicorn stops: a worker reading one of them gets its end at once.
        for connection in stalled:
            connection.close()


def test_the_access_log_keeps_no_recovery_link(make_run_server):
    server = make_run_server
    reset_token = "1.t8k2n1.Qm9vbTBvbTBvbTBvbTBvbTBvbTBvbTBvbTBvbTBvbTA"
    secure_token = "1.t8k2n1.U2VjdXJlU2VjdXJlU2VjdXJlU2VjdXJlU2VjdXJlU2U"
    response = requests.get(
        f"{server.base_url}/auth/reset/{reset_token}?from=email",
        headers={"Referer": f"{server.base_url}/auth/secure/{secure_token}"},
        timeout=10,
    )
    assert response.status_code == 404  # not a link we issued: the log is what matters here
    # Percent-escapes reach the same page: they must not reach the log.
    escaped = requests.get(f"{server.base_url}/auth/%72eset/{reset_token}x", timeout=10)
    assert escaped.status_code == 404
    assert requests.get(server.base_url + "/healthz", timeout=10).status_code == 200

    log = server.access_log.read_text()
    assert "GET /healthz" in log  # the log is written, line by line
    assert "GET /auth/reset/[redacted]?from=email" in log
    assert "/auth/secure/[redacted]" in log
    assert reset_token not in log
    assert "%72eset" not in log
    assert secure_token not in log
