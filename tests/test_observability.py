"""What an operator sees: /metrics after known traffic (one process, and four gunicorn
workers adding up), and the JSON log lines, which carry no secret."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from pathlib import Path

import pytest
import requests
from flask.logging import default_handler
from prometheus_client.parser import text_string_to_metric_families

from webapp.config import ConfigError, load_config
from webapp.observability import JsonLogHandler

from .conftest import PASSWORD, AuthActions, base_environ, cookie_value, csrf_token_from, make_app
from .test_rate_limits import client_from
from .test_serving import BIN, flask_command, gunicorn, make_run_environ, wait_until_serving

METRICS_TOKEN = "a-metrics-token-of-the-tests-0123456789"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by name and labels."""
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def app_config():
    return {
        "METRICS_TOKEN": METRICS_TOKEN,
        # One guesser's fourth attempt is refused: a limited sign-in.
        "SIGN_IN_ATTEMPTS_PER_IP": "3 per minute",
        "MAX_CONCURRENT_PASSWORD_CHECKS": "1",
    }


def test_metrics_count_what_happened(app, clock):
    alice = client_from(app)
    AuthActions(alice).register("alice@example.com")  # a sign-in

    guesser = client_from(app)
    answers = [AuthActions(guesser).login("alice@example.com", "a wrong guess").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]  # three failed, one limited

    slots = app.extensions["sign_in_limits"].password_checks
    assert slots.try_slot()  # another request holds the only password check
    assert AuthActions(client_from(app)).login("alice@example.com", PASSWORD).status_code == 503  # busy
    slots.release()

    # A rotation, then a request of the same page load with the old cookies: a grace answer.
    stale_refresh = cookie_value(alice, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert alice.get("/account").status_code == 200
    current_access, current_refresh = cookie_value(alice, "access_token"), cookie_value(alice, "refresh_token")
    alice.set_cookie("refresh_token", stale_refresh)
    alice.delete_cookie("access_token")
    clock.advance(1)
    assert alice.get("/account").status_code == 200
    alice.set_cookie("refresh_token", current_refresh)
    alice.set_cookie("access_token", current_access)
    assert alice.get("/account").status_code == 200  # the rotation's answer reached the browser

    # A copy of the old refresh token, used after the grace window: reuse, detected.
    thief = client_from(app)
    thief.set_cookie("refresh_token", stale_refresh)
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    assert thief.get("/account").status_code == 302

    bob = client_from(app)
    AuthActions(bob).register("bob@example.com")  # a second sign-in
    AuthActions(bob).logout()  # a revocation: signed out

    samples = scrape(client_from(app))
    assert value(samples, "webapp_sign_ins_total", outcome="ok") == 2
    assert value(samples, "webapp_sign_ins_total", outcome="failed") == 3
    assert value(samples, "webapp_sign_ins_total", outcome="limited") == 1
    assert value(samples, "webapp_sign_ins_total", outcome="busy") == 1
    assert value(samples, "webapp_rotations_total") == 1
    assert value(samples, "webapp_grace_answers_total") == 1
    assert value(samples, "webapp_refresh_reuse_detections_total") == 1
    assert value(samples, "webapp_revocations_total", reason="reuse") == 1
    assert value(samples, "webapp_revocations_total", reason="signed_out") == 1
    assert value(samples, "webapp_security_events_total", kind="refresh_token_reused") == 1
    assert value(samples, "webapp_http_responses_total", status="429") == 1
    assert value(samples, "webapp_http_responses_total", status="503") == 1
    # Every request went through the timed hook; the scrape itself is counted as a
    # response only once its answer is made, after the figures were read.
    answered = sum(value for (name, _), value in samples.items() if name == "webapp_http_responses_total")
    assert value(samples, "webapp_auth_hook_seconds_count") == answered + 1
    assert value(samples, "webapp_auth_hook_seconds_sum") > 0


def test_a_rolled_back_security_event_is_not_counted(app, clock, monkeypatch):
    """Counted once committed: a sign-in whose unit of work fails never happened."""
    from webapp import sessions

    browser = client_from(app)
    AuthActions(browser).register("alice@example.com")
    AuthActions(browser).logout()

    def fail_after_recording(*args, **kwargs):
        raise sessions.CredentialsChanged()

    monkeypatch.setattr(sessions, "_confirm_credentials", fail_after_recording)
    assert AuthActions(browser).login("alice@example.com", PASSWORD).status_code == 200  # refused
    samples = scrape(browser)
    assert value(samples, "webapp_sign_ins_total", outcome="ok") == 1
    assert value(samples, "webapp_security_events_total", kind="signed_in") == 1


def test_the_metrics_need_their_token(database_url, clock):
    without = make_app(database_url, clock).test_client()
    assert without.get("/metrics", headers=BEARER).status_code == 404

    client = make_app(database_url, clock, METRICS_TOKEN=METRICS_TOKEN).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    refused = client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})
    assert refused.status_code == 401 and "webapp_" not in refused.get_data(as_text=True)
    assert client.get("/metrics", headers=BEARER).status_code == 200


def test_a_short_metrics_token_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        load_config(base_environ(METRICS_TOKEN="short"), tmp_path)


# --- JSON logs --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def plain_logs_afterwards():
    """The JSON handler sits on the process's root logger: gone after each test, with
    Flask's own back on the app's logger, so no later test writes to a closed capture."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, JsonLogHandler):
            root.removeHandler(handler)
    app_logger = logging.getLogger("webapp")
    if default_handler not in app_logger.handlers:
        app_logger.addHandler(default_handler)
    logging.getLogger("werkzeug").setLevel(logging.NOTSET)


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON, or this fails


def test_json_logs_a_line_per_request_with_no_secret_in_it(database_url, clock, capsys):
    app = make_app(database_url, clock, LOG_FORMAT="json")
    client = app.test_client()
    AuthActions(client).register("alice@example.com")
    access, refresh = cookie_value(client, "access_token"), cookie_value(client, "refresh_token")
    session_id = client.get("/api/session").json["session_id"]

    traced = client.get("/account?tab=activity", headers={"X-Request-ID": "trace-0042"})
    assert traced.headers["X-Request-ID"] == "trace-0042"
    forged = client.get("/account", headers={"X-Request-ID": 'x"} {"level": "error'})
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert client.get("/account").status_code == 200  # rotates: new tokens in the cookies
    printed = app.test_cli_runner().invoke(args=["users", "reset-link", "alice@example.com"]).output
    reset_token = re.search(r"/auth/reset/(\S+)", printed)[1]
    client.get(f"/auth/reset/{reset_token}")

    # A library's own line, as the connection pool writes one when a database restarts;
    # and the development server's request line, which would hold the whole path.
    logging.getLogger("sqlalchemy.pool").error("Exception during reset or similar")
    logging.getLogger("werkzeug").info(f'127.0.0.1 - - "GET /auth/reset/{reset_token} HTTP/1.1" 303 -')
    out = capsys.readouterr().err
    lines = json_lines(out)
    assert any(line["logger"] == "sqlalchemy.pool" and line["level"] == "error" for line in lines)
    requests_logged = [line for line in lines if line["logger"] == "webapp.request"]
    account = next(line for line in requests_logged if line["request_id"] == "trace-0042")
    assert account["method"] == "GET" and account["path"] == "/account" and account["status"] == 200
    assert account["user_id"] == 1 and account["duration_ms"] > 0
    assert account["session"] == hashlib.sha256(session_id.encode()).hexdigest()[:16]
    assert any(line["path"] == "/auth/reset/<token>" for line in requests_logged)  # the route, not the link
    signed_in = next(line for line in lines if line["logger"] == "webapp.security")
    assert signed_in["event"] == "signed_in" and signed_in["user_id"] == 1
    # Nothing a thief or a guesser could use: no token, no password, no address.
    for secret in (access, refresh, cookie_value(client, "refresh_token"), reset_token, PASSWORD, "alice@example.com"):
        assert secret not in out
    assert "tab=activity" not in out  # paths without their query


@pytest.mark.parametrize("path", ["/auth//reset/{}", "/auth/reset//{}", "/auth//secure/{}", "/auth/%72eset/{}"])
def test_a_link_token_in_an_odd_path_stays_out_of_the_log(database_url, clock, capsys, path):
    """Werkzeug redirects `/auth//reset/X` to the view, with X: the log line of that
    redirect must not hold X either."""
    app = make_app(database_url, clock, LOG_FORMAT="json")
    client = app.test_client()
    AuthActions(client).register("alice@example.com")
    printed = app.test_cli_runner().invoke(args=["users", "reset-link", "alice@example.com"]).output
    reset_token = re.search(r"/auth/reset/(\S+)", printed)[1]
    answer = client.get(path.format(reset_token))
    assert answer.status_code in (303, 308, 404)
    out = capsys.readouterr().err
    assert json_lines(out) and reset_token not in out


def test_a_crash_in_a_link_view_logs_the_route_not_the_token(database_url, clock, capsys, monkeypatch):
    from webapp import recovery

    app = make_app(database_url, clock, LOG_FORMAT="json")
    client = app.test_client()
    AuthActions(client).register("alice@example.com")
    printed = app.test_cli_runner().invoke(args=["users", "reset-link", "alice@example.com"]).output
    reset_token = re.search(r"/auth/reset/(\S+)", printed)[1]

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(recovery, "user_for_link", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: a 500 page, and the log
    assert client.get(f"/auth/reset/{reset_token}").status_code == 500
    out = capsys.readouterr().err
    crash = next(line for line in json_lines(out) if line["level"] == "error")
    assert crash["message"] == "Exception on /auth/reset/<token> [GET]" and "RuntimeError" in crash["exception"]
    assert reset_token not in out


def test_a_devices_page_action_logs_no_session_id(database_url, clock, capsys):
    app = make_app(database_url, clock, LOG_FORMAT="json")
    laptop, phone = app.test_client(), app.test_client()
    AuthActions(laptop).register("alice@example.com")
    AuthActions(phone).login("alice@example.com")
    phone_session = phone.get("/api/session").json["session_id"]
    form = {"csrf_token": csrf_token_from(laptop.get("/account/sessions").data)}
    assert laptop.post(f"/account/sessions/{phone_session}/revoke", data=form).status_code == 302
    out = capsys.readouterr().err
    assert any(line.get("path") == "/account/sessions/<session_id>/revoke" for line in json_lines(out))
    assert phone_session not in out


def test_text_logs_send_no_request_id_and_no_json(database_url, clock, capsys):
    client = make_app(database_url, clock).test_client()
    response = client.get("/", headers={"X-Request-ID": "trace-0042"})
    assert "X-Request-ID" not in response.headers
    assert '"logger"' not in capsys.readouterr().err


# --- several workers --------------------------------------------------------------------------


@pytest.mark.parametrize("token_given", ["in the environment", "with gunicorn -e"])
def test_four_workers_add_up_in_every_scrape(tmp_path: Path, token_given):
    """gunicorn's workers are processes: each counts on its own, and a scrape answered by
    any of them reports the sum (prometheus_client's multiprocess mode, set up by
    gunicorn.conf.py because METRICS_TOKEN is set, however it was given)."""
    env = make_run_environ(tmp_path, ALLOW_PER_PROCESS_LIMITS="on")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    flask_command(env, "db", "upgrade")
    command = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "4", "wsgi:app"]
    if token_given == "in the environment":
        env["METRICS_TOKEN"] = METRICS_TOKEN
    else:
        command[1:1] = ["-e", f"METRICS_TOKEN={METRICS_TOKEN}"]
    with gunicorn(command, env, tmp_path / "gunicorn.log") as process:
        base_url = wait_until_serving(process, tmp_path / "gunicorn.log", 4)
        for number in range(8):
            # A connection each: the kernel spreads them over the workers.
            answer = requests.get(f"{base_url}/auth/login", timeout=10, headers={"Connection": "close"})
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', answer.text)[1]
            form = {"email": f"user{number}@example.com", "password": "a wrong guess", "csrf_token": token}
            failed = requests.post(
                f"{base_url}/auth/login", data=form, cookies=answer.cookies, timeout=10, headers={"Connection": "close"}
            )
            assert failed.status_code == 200
        scrapes = [
            parse(requests.get(f"{base_url}/metrics", headers={**BEARER, "Connection": "close"}, timeout=10).text)
            for _ in range(8)
        ]
        pids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
        assert len(pids.stdout.split()) == 4
    # Whichever worker answered, all eight (one worker's own count would be fewer).
    assert [value(samples, "webapp_sign_ins_total", outcome="failed") for samples in scrapes] == [8] * 8
