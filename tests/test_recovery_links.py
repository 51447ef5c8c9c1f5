"""Recovery links in the engine (no Flask), and how emails travel: STARTTLS that checks
the server, the development log, production without a mail server."""

from __future__ import annotations

import logging
import ssl
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from sqlalchemy.orm import Session as DbSession

from webapp import accounts, recovery, sessions
from webapp.config import ConfigError, load_config
from webapp.recovery import InvalidLink, LinkPurpose, RecoveryPolicy

from .conftest import PASSWORD, TEST_SECRET, AuthActions, base_environ, csrf_token_from, make_app
from .smtp import links_in, smtp_server
from .test_recovery import EMAIL, ask_for_reset, sent, set_new_password

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
POLICY = RecoveryPolicy.from_secrets(TEST_SECRET, reset_ttl=timedelta(hours=1))


@pytest.fixture
def user(db_session):
    user = accounts.create_user(db_session, EMAIL, PASSWORD, rounds=4, now=NOW)
    db_session.commit()
    return user


def reset_token(user, *, policy=POLICY, now=NOW) -> str:
    return recovery.make_link_token(user, LinkPurpose.RESET, policy=policy, now=now)


def test_a_link_names_its_user_and_its_purpose(db_session, user):
    token = reset_token(user)
    assert recovery.user_for_link(db_session, token, LinkPurpose.RESET, policy=POLICY, now=NOW) is user
    # A "Not you?" link is no reset link, and the other way round.
    with pytest.raises(InvalidLink):
        recovery.user_for_link(db_session, token, LinkPurpose.SECURE, policy=POLICY, now=NOW)
    secure = recovery.make_link_token(user, LinkPurpose.SECURE, policy=POLICY, now=NOW)
    with pytest.raises(InvalidLink):
        recovery.user_for_link(db_session, secure, LinkPurpose.RESET, policy=POLICY, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the MAC
        lambda token: "2" + token[1:],  # another user
        lambda token: token.replace(".", ".1", 1),  # another issue time
        lambda token: token + "=",
        lambda token: "",
    ],
)
def test_a_tampered_link_is_refused(db_session, user, tamper):
    accounts.create_user(db_session, "bob@example.com", PASSWORD, rounds=4, now=NOW)
    db_session.commit()
    with pytest.raises(InvalidLink):
        recovery.user_for_link(db_session, tamper(reset_token(user)), LinkPurpose.RESET, policy=POLICY, now=NOW)


def test_a_link_made_with_another_secret_is_refused_unless_it_is_a_fallback(db_session, user):
    old = RecoveryPolicy.from_secrets("an-older-secret-that-was-rotated-out-0123456789", reset_ttl=timedelta(hours=1))
    token = reset_token(user, policy=old)
    with pytest.raises(InvalidLink):
        recovery.user_for_link(db_session, token, LinkPurpose.RESET, policy=POLICY, now=NOW)
    rotated = RecoveryPolicy.from_secrets(
        TEST_SECRET, ["an-older-secret-that-was-rotated-out-0123456789"], reset_ttl=timedelta(hours=1)
    )
    assert recovery.user_for_link(db_session, token, LinkPurpose.RESET, policy=rotated, now=NOW) is user


def test_a_link_from_the_future_is_refused(db_session, user):
    token = reset_token(user, now=NOW + timedelta(hours=1))
    with pytest.raises(InvalidLink):
        recovery.user_for_link(db_session, token, LinkPurpose.RESET, policy=POLICY, now=NOW)


def test_a_sign_in_that_checked_the_password_before_a_reset_does_not_outlive_it(db_session, user, policy):
    # The sign-in has checked the old password ...
    signing_in = accounts.check_credentials(db_session, EMAIL, PASSWORD, rounds=4)
    assert signing_in is user
    # ... when the owner's reset commits and ends every session.
    with DbSession(db_session.get_bind()) as other:
        recovery.reset_password(other, reset_token(user), "the owner's new password", policy=POLICY, rounds=4, now=NOW)
        other.commit()
    with pytest.raises(sessions.CredentialsChanged):
        sessions.start_session(db_session, signing_in, policy=policy, now=NOW)
    db_session.rollback()
    assert sessions.list_active_sessions(db_session, user_id=user.id, now=NOW) == []


def test_a_password_change_that_checked_the_old_password_before_a_reset_does_not_overwrite_it(
    db_session, user, policy, monkeypatch
):
    started = sessions.start_session(db_session, user, policy=policy, now=NOW)
    db_session.commit()
    link = reset_token(user)
    session_times = sessions.session_times

    def reset_meanwhile(*args, **kwargs):
        # The change has checked the current password and found its session active ...
        times = session_times(*args, **kwargs)
        # ... when the owner's reset commits.
        with DbSession(db_session.get_bind()) as other:
            recovery.reset_password(other, link, "the owner's new password", policy=POLICY, rounds=4, now=NOW)
            other.commit()
        return times

    monkeypatch.setattr(sessions, "session_times", reset_meanwhile)
    with pytest.raises(sessions.SessionInactive):
        accounts.change_password(
            db_session,
            user_id=user.id,
            session_id=started.session_id,
            current_password=PASSWORD,
            new_password="the thief's choice of password",
            rounds=4,
            policy=policy,
            now=NOW,
        )
    db_session.rollback()
    assert accounts.check_credentials(db_session, EMAIL, "the owner's new password", rounds=4) is not None


def test_two_requests_racing_on_one_link_reset_the_password_once(db_session, user, database_url):
    token = reset_token(user)
    # The first request has checked the link (and holds the user as it was) ...
    recovery.user_for_link(db_session, token, LinkPurpose.RESET, policy=POLICY, now=NOW)
    # ... when the second one resets the password and commits.
    with DbSession(db_session.get_bind()) as other:
        recovery.reset_password(other, token, "the second request's choice", policy=POLICY, rounds=4, now=NOW)
        other.commit()
    with pytest.raises(InvalidLink):
        recovery.reset_password(db_session, token, "the first request's choice", policy=POLICY, rounds=4, now=NOW)
    db_session.rollback()
    assert accounts.check_credentials(db_session, EMAIL, "the second request's choice", rounds=4) is not None
    assert accounts.check_credentials(db_session, EMAIL, "the first request's choice", rounds=4) is None


# --- how emails travel -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server_context(certificate_authority) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


def mail_app(database_url, clock, port: int, **config):
    settings = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "PUBLIC_URL": "https://accounts.example.test"}
    return make_app(database_url, clock, **{**settings, **config})


def test_starttls_and_login_when_configured(
    database_url, clock, tls_server_context, certificate_authority, tmp_path, monkeypatch
):
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    # The machine's trust store, as OpenSSL reads it, now trusts the test's authority.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with smtp_server(tls_context=tls_server_context, username="mailer", password="smtp-secret") as (mailbox, port):
        app = mail_app(
            database_url, clock, port, MAIL_USE_TLS=True, MAIL_USERNAME="mailer", MAIL_PASSWORD="smtp-secret"
        )
        AuthActions(app.test_client()).register()
        ask_for_reset(app.test_client())
        [message] = mailbox.wait_for(1)
        assert message["Subject"] == "Reset your password"
        sent(app)


@pytest.mark.filterwarnings(
    # aiosmtpd leaves the transport of a refused handshake to the garbage collector.
    "ignore::pytest.PytestUnraisableExceptionWarning"
)
def test_starttls_refuses_a_server_whose_certificate_it_cannot_verify(database_url, clock, tls_server_context, caplog):
    caplog.set_level(logging.INFO, logger="webapp.mail")
    with smtp_server(tls_context=tls_server_context) as (mailbox, port):
        app = mail_app(database_url, clock, port, MAIL_USE_TLS=True)
        AuthActions(app.test_client()).register()
        assert ask_for_reset(app.test_client()).status_code == 200
        sent(app)
        assert mailbox.messages == []
    ours = [record for record in caplog.records if record.name == "webapp.mail" and record.levelno >= logging.ERROR]
    [failure] = [record.getMessage() for record in ours]
    assert "password_reset email for user 1 not sent: SSLCertVerificationError" in failure


def test_without_a_mail_server_development_writes_each_email_to_the_log(database_url, clock, caplog):
    caplog.set_level(logging.INFO, logger="webapp.mail")
    app = make_app(database_url, clock)
    AuthActions(app.test_client()).register()
    ask_for_reset(app.test_client())
    sent(app)
    [record] = [record for record in caplog.records if "Subject: Reset your password" in record.getMessage()]
    logged = record.getMessage()
    assert f"To: {EMAIL}" in logged
    # Without PUBLIC_URL, development links point at the address the request came to.
    [link] = [word for word in logged.split() if "/auth/reset/" in word]
    assert link.startswith("http://localhost/auth/reset/")

    assert set_new_password(app.test_client(), link.removeprefix("http://localhost")).status_code == 302


def test_production_without_a_mail_server_says_reset_by_email_is_not_set_up(database_url, clock):
    app = make_app(database_url, clock, environ={"APP_ENV": "production"})
    page = app.test_client().get("/auth/forgot", base_url="https://localhost")
    assert page.status_code == 200
    text = " ".join(page.get_data(as_text=True).split())
    assert "This site cannot send email" in text
    assert 'name="email"' not in page.get_data(as_text=True)


def test_production_without_mail_or_public_url_still_signs_in_new_devices(database_url, clock):
    app = make_app(database_url, clock, environ={"APP_ENV": "production"})
    assert app.config["PUBLIC_URL"] is None
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", EMAIL, "--password-stdin"], input=PASSWORD + "\n").exit_code == 0
    api = app.test_client().post("/api/auth/token", json={"email": EMAIL, "password": PASSWORD})
    assert api.status_code == 200
    browser = app.test_client()
    page = browser.get("/auth/login", base_url="https://localhost")
    data = {"email": EMAIL, "password": PASSWORD, "csrf_token": csrf_token_from(page.data)}
    # Over HTTPS, Flask-WTF also wants a Referer of this very site.
    headers = {"Referer": "https://localhost/auth/login"}
    assert browser.post("/auth/login", data=data, base_url="https://localhost", headers=headers).status_code == 302
    assert browser.get("/api/me", base_url="https://localhost").status_code == 200


def test_production_links_must_be_https(tmp_path):
    with pytest.raises(ConfigError, match="PUBLIC_URL must start with https://"):
        load_config(base_environ(APP_ENV="production", PUBLIC_URL="http://app.example.com"), tmp_path)


def test_production_with_a_mail_server_needs_public_url(tmp_path):
    with pytest.raises(ConfigError, match="PUBLIC_URL is not set"):
        load_config(base_environ(APP_ENV="production", MAIL_SERVER="smtp.example.com"), tmp_path)
    config = load_config(
        base_environ(APP_ENV="production", MAIL_SERVER="smtp.example.com", PUBLIC_URL="https://app.example.com/"),
        tmp_path,
    )
    assert config["PUBLIC_URL"] == "https://app.example.com"


@pytest.mark.parametrize("value", ["app.example.com", "ftp://app.example.com", "https://", "https://a.example/?x=1"])
def test_a_malformed_public_url_stops_the_start(tmp_path, value):
    with pytest.raises(ConfigError, match="PUBLIC_URL must be"):
        load_config(base_environ(PUBLIC_URL=value), tmp_path)


def test_reset_link_without_public_url_in_production_says_what_to_set(database_url, clock):
    app = make_app(database_url, clock, environ={"APP_ENV": "production"})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", EMAIL, "--password-stdin"], input=PASSWORD + "\n").exit_code == 0
    result = runner.invoke(args=["users", "reset-link", EMAIL])
    assert result.exit_code == 1
    assert "PUBLIC_URL is not set" in result.output


def test_every_email_has_a_plain_text_and_an_html_part(database_url, clock):
    with smtp_server() as (mailbox, port):
        app = mail_app(database_url, clock, port)
        AuthActions(app.test_client()).register()
        ask_for_reset(app.test_client())
        [message] = mailbox.wait_for(1)
        sent(app)
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    [link] = links_in(message)
    assert f'href="{link}"' in html.get_content()
