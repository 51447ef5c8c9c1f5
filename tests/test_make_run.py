"""The sign-in limits hold exactly in the default `make run`.

The limits count in memory by default, and memory is per process: served by several
processes, each would keep its own count. The server here is the one `make run` starts
(the Makefile's own gunicorn line, `make -n run`, with its default number of workers and
`gunicorn.conf.py`, from the project root), on memory:// as by default.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import PASSWORD, TEST_SECRET
from .test_serving import BIN, PROJECT_ROOT, make_run_gunicorn_command, wait_until_serving, worker_count

# Three accounts, one burst each: with more than one process, a burst that one of them
# happened to answer alone would not show it.
EMAILS = ("alice@example.com", "bob@example.com", "carol@example.com")
LIMIT = 10
ATTEMPTS = 40


@pytest.fixture
def make_run_server(tmp_path: Path):
    command = make_run_gunicorn_command()
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
        "BCRYPT_ROUNDS": "4",
        "LOGIN_LIMIT_PER_ACCOUNT": f"{LIMIT} per 15 minutes",
        # All attempts come from 127.0.0.1: only the account's limit is under test.
        "LOGIN_LIMIT_PER_IP": "1000 per minute",
        "SIGN_IN_ATTEMPTS_PER_IP": "1000 per minute",
    }
    for name in ("FLASK_APP", "RATELIMIT_STORAGE_URI"):  # the defaults: wsgi.py, memory://
        env.pop(name, None)
    for step in (["db", "upgrade"], *(["users", "create", email, "--password-stdin"] for email in EMAILS)):
        done = subprocess.run(
            [BIN / "flask", *step], cwd=PROJECT_ROOT, env=env, input=PASSWORD + "\n", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    error_log = tmp_path / "gunicorn.log"
    with error_log.open("w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield wait_until_serving(process, error_log, worker_count(command))
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_account_limit_holds_exactly_in_the_default_make_run(make_run_server):
    def wrong_password(email: str) -> tuple[int, str | None]:
        # A connection of its own each: the server decides which process answers.
        response = requests.post(
            f"{make_run_server}/api/auth/token",
            json={"email": email, "password": "a wrong guess", "client_name": "test"},
            timeout=30,
        )
        return response.status_code, response.json().get("message")

    for email in EMAILS:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(wrong_password, [email] * ATTEMPTS))
        incorrect = [answer for answer in answers if answer == (401, "Incorrect email or password.")]
        limited = [answer for answer in answers if answer[0] == 429]
        assert (len(incorrect), len(limited)) == (LIMIT, ATTEMPTS - LIMIT), (email, answers)


def start_make_run(tmp_path: Path, workers: int, **settings: str) -> tuple[subprocess.Popen, Path, list[str]]:
    command = [*make_run_gunicorn_command()]
    index = command.index("--workers") if "--workers" in command else None
    if index is not None:
        command[index + 1] = str(workers)
    else:
        command += ["--workers", str(workers)]
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "SECRET_KEY": TEST_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
        **settings,
    }
    for name in ("FLASK_APP", "RATELIMIT_STORAGE_URI", "ALLOW_PER_PROCESS_LIMITS"):
        if name not in settings:
            env.pop(name, None)
    error_log = tmp_path / "gunicorn.log"
    with error_log.open("w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return process, error_log, command


def test_several_workers_with_limits_counted_in_memory_refuse_to_start(tmp_path):
    """`WORKERS=2 make run` on the default memory:// would make every limit twice as
    loose: it stops and says what to set instead."""
    process, error_log, _ = start_make_run(tmp_path, workers=2)
    try:
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "RATELIMIT_STORAGE_URI=redis://" in error_log.read_text()


def test_several_workers_start_when_the_limits_are_shared(tmp_path):
    process, error_log, command = start_make_run(tmp_path, workers=2, RATELIMIT_STORAGE_URI="redis://127.0.0.1:6379/0")
    try:
        base_url = wait_until_serving(process, error_log, worker_count(command))
        assert requests.get(f"{base_url}/healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
