"""examples/client.py, run as a user would run it, against the live app over HTTP.

The server runs in a thread of this process so the test can move its clock: no sleeps.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from .conftest import PASSWORD, AuthActions, csrf_token_from

CLIENT = Path(__file__).resolve().parent.parent / "examples" / "client.py"


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def browser(client):
    auth = AuthActions(client)
    auth.register()
    return client


def run_client(live_url: str, token_file: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(CLIENT),
            "--url",
            live_url,
            "--token-file",
            str(token_file),
            "--client-name",
            "backup-script",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sign_in_call_expire_refresh_retry_and_signed_out_from_the_browser(app, clock, live_url, browser, tmp_path):
    token_file = tmp_path / "tokens.json"
    login = run_client(live_url, token_file, "login", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    assert "Signed in as alice@example.com" in login.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    me = run_client(live_url, token_file, "me")
    assert me.returncode == 0 and "Signed in as alice@example.com" in me.stdout

    before = json.loads(token_file.read_text())
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    me = run_client(live_url, token_file, "me")
    assert me.returncode == 0, me.stderr
    after = json.loads(token_file.read_text())
    assert after["refresh_token"] != before["refresh_token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # The person signs the script out from the sessions page in their browser.
    page = browser.get("/account/sessions")
    assert "API client: backup-script" in page.get_data(as_text=True)
    revoke = browser.post(
        f"/account/sessions/{after['session_id']}/revoke", data={"csrf_token": csrf_token_from(page.data)}
    )
    assert revoke.status_code == 302

    me = run_client(live_url, token_file, "me")
    assert me.returncode == 2
    assert "Your session has ended" in me.stderr


def test_a_copied_token_file_used_after_rotation_ends_the_session_for_both(app, clock, live_url, browser, tmp_path):
    token_file, stolen_copy = tmp_path / "tokens.json", tmp_path / "stolen.json"
    run_client(live_url, token_file, "login", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    shutil.copy(token_file, stolen_copy)
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert run_client(live_url, token_file, "me").returncode == 0  # the owner rotates

    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    thief = run_client(live_url, stolen_copy, "me")
    assert thief.returncode == 2
    owner = run_client(live_url, token_file, "me")
    assert owner.returncode == 2 and "Your session has ended" in owner.stderr
    from webapp.account.events import event_label

    assert event_label("refresh_token_reused") in browser.get("/account/sessions").get_data(as_text=True)


def test_logout_revokes_and_forgets_the_tokens(live_url, browser, tmp_path):
    token_file = tmp_path / "tokens.json"
    run_client(live_url, token_file, "login", "alice@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    tokens = json.loads(token_file.read_text())
    api_row = f'data-session-id="{tokens["session_id"]}"'
    assert api_row in browser.get("/account/sessions").get_data(as_text=True)  # listed while signed in
    result = run_client(live_url, token_file, "logout")
    assert result.returncode == 0 and not token_file.exists()
    response = browser.get("/account/sessions")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    own_session = browser.get("/api/me").json["session_id"]
    assert f'data-session-id="{own_session}"' in page  # the page lists sessions: the browser's own
    assert api_row not in page


def test_wrong_password_says_so_and_saves_nothing(live_url, browser, tmp_path):
    token_file = tmp_path / "tokens.json"
    result = run_client(
        live_url, token_file, "login", "alice@example.com", "--password-stdin", stdin="wrong password\n"
    )
    assert result.returncode != 0
    assert "Incorrect email or password" in result.stderr
    assert not token_file.exists()
