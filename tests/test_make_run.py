"""The sign-in limits hold exactly in the default `make run`.

The limits count in memory by default, and memory is per process: served by several
processes, each would keep its own count. The server here is the one `make run` starts
(the Makefile's own gunicorn line, `make -n run`, with its default number of workers and
`gunicorn.conf.py`, from the project root), on memory:// as by default.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import PASSWORD
from .test_serving import (
    flask_command,
    gunicorn,
    make_run_environ,
    make_run_gunicorn_command,
    wait_until_serving,
    worker_count,
)

# Three accounts, one burst each: with more than one process, a burst that one of them
# happened to answer alone would not show it.
EMAILS = ("alice@example.com", "bob@example.com", "carol@example.com")
LIMIT = 10
ATTEMPTS = 40


def with_workers(command: list[str], workers: int) -> list[str]:
    """`make run`'s command with another number of worker processes."""
    if "--workers" in command:
        index = command.index("--workers")
        return [*command[: index + 1], str(workers), *command[index + 2 :]]
    return [*command, "--workers", str(workers)]


@pytest.fixture
def make_run_server(tmp_path: Path):
    command = make_run_gunicorn_command()
    env = make_run_environ(
        tmp_path,
        LOGIN_LIMIT_PER_ACCOUNT=f"{LIMIT} per 15 minutes",
        # All attempts come from 127.0.0.1: only the account's limit is under test.
        LOGIN_LIMIT_PER_IP="1000 per minute",
        SIGN_IN_ATTEMPTS_PER_IP="1000 per minute",
    )
    flask_command(env, "db", "upgrade")
    for email in EMAILS:
        flask_command(env, "users", "create", email, "--password-stdin", stdin=PASSWORD + "\n")
    error_log = tmp_path / "gunicorn.log"
    with gunicorn(command, env, error_log) as process:
        yield wait_until_serving(process, error_log, worker_count(command))


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


def test_several_workers_with_limits_counted_in_memory_refuse_to_start(tmp_path):
    """`WORKERS=2 make run` on the default memory:// would make every limit twice as
    loose: it stops and says what to set instead."""
    error_log = tmp_path / "gunicorn.log"
    with gunicorn(with_workers(make_run_gunicorn_command(), 2), make_run_environ(tmp_path), error_log) as process:
        assert process.wait(timeout=60) != 0
    assert "RATELIMIT_STORAGE_URI=redis://" in error_log.read_text()


def test_several_workers_start_when_the_limits_are_shared(tmp_path):
    command = with_workers(make_run_gunicorn_command(), 2)
    env = make_run_environ(tmp_path, RATELIMIT_STORAGE_URI="redis://127.0.0.1:6379/0")
    error_log = tmp_path / "gunicorn.log"
    with gunicorn(command, env, error_log) as process:
        base_url = wait_until_serving(process, error_log, worker_count(command))
        assert requests.get(f"{base_url}/healthz", timeout=10).status_code == 200
