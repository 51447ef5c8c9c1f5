"""Operator commands: `flask users create/disable/enable/sign-out`. Each prints what it
did and exits non-zero with a clear message for an unknown email."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import SecurityEvent, User

from .conftest import PASSWORD, AuthActions

EMAIL = "alice@example.com"


def signed_in(app, email=EMAIL, password=PASSWORD):
    client = app.test_client()
    AuthActions(client).login(email=email, password=password)
    return client


def is_signed_in(client) -> bool:
    return client.get("/api/me").status_code == 200


def event_kinds(app) -> list[str]:
    with app.app_context():
        return list(db.session.execute(select(SecurityEvent.kind).order_by(SecurityEvent.id)).scalars())


def test_create_with_password_from_stdin_then_sign_in(app, runner):
    result = runner.invoke(args=["users", "create", "  Alice@Example.COM ", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "Created account alice@example.com." in result.output
    assert is_signed_in(signed_in(app))


def test_create_with_a_prompt_asks_twice(app, runner):
    result = runner.invoke(args=["users", "create", EMAIL], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert is_signed_in(signed_in(app))


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        (EMAIL, "short", "The password must have 8 to 1000 characters."),
        (EMAIL, "x" * 1001, "The password must have 8 to 1000 characters."),
        ("not-an-email", PASSWORD, "is not an email address"),
    ],
)
def test_create_refuses_bad_input(app, runner, email, password, message):
    result = runner.invoke(args=["users", "create", email, "--password-stdin"], input=password + "\n")
    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert db.session.execute(select(User)).first() is None


def test_create_refuses_a_taken_email(auth, runner):
    auth.register()
    result = runner.invoke(args=["users", "create", EMAIL.upper(), "--password-stdin"], input="another password\n")
    assert result.exit_code != 0
    assert "already exists" in result.output


@pytest.mark.parametrize("command", ["disable", "enable", "sign-out"])
def test_an_unknown_email_exits_non_zero_with_a_message(runner, command):
    result = runner.invoke(args=["users", command, "nobody@example.com"])
    assert result.exit_code != 0
    assert "No account has the email 'nobody@example.com'." in result.output


def test_disable_refuses_the_unexpired_access_token_at_its_next_request(app, auth, runner):
    auth.register()
    laptop, phone = auth.client, signed_in(app)
    assert is_signed_in(laptop) and is_signed_in(phone)

    result = runner.invoke(args=["users", "disable", EMAIL])
    assert result.exit_code == 0, result.output
    assert "Disabled alice@example.com; ended 2 sessions." in result.output

    # No time has passed: both access tokens are unexpired, and refused.
    assert laptop.get("/api/me").status_code == 401
    response = phone.get("/account")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/login")

    # Sign-in is refused with the generic message.
    refused = AuthActions(app.test_client()).login()
    assert refused.status_code == 200
    assert "Incorrect email or password." in refused.get_data(as_text=True)
    assert event_kinds(app)[-1] == "account_disabled"


def test_enable_lets_a_disabled_user_sign_in_again(app, auth, runner):
    auth.register()
    runner.invoke(args=["users", "disable", EMAIL])
    result = runner.invoke(args=["users", "enable", EMAIL])
    assert result.exit_code == 0
    assert "Enabled alice@example.com." in result.output
    assert is_signed_in(signed_in(app))
    assert "account_enabled" in event_kinds(app)

    again = runner.invoke(args=["users", "enable", EMAIL])
    assert again.exit_code == 0 and "was not disabled" in again.output


def test_sign_out_ends_every_session_but_allows_signing_in_again(app, auth, runner):
    auth.register()
    laptop, phone = auth.client, signed_in(app)
    result = runner.invoke(args=["users", "sign-out", EMAIL])
    assert result.exit_code == 0
    assert "Signed alice@example.com out everywhere; ended 2 sessions." in result.output
    assert not is_signed_in(laptop) and not is_signed_in(phone)
    assert is_signed_in(signed_in(app))
    assert "all_sessions_revoked" in event_kinds(app)
