"""Operator commands: thin wrappers over the engine.

`flask prune` deletes what has been kept long enough; `flask users ...` creates,
disables, enables and signs out accounts, and prints reset links. Each prints what it
did and exits non-zero with a message for an unknown email.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import accounts, mail, passwords, recovery, retention
from .database import unit_of_work
from .devices import Device
from .extensions import db

# What an operator's action looks like in the user's security activity: no browser, no IP.
OPERATOR = Device()


def now() -> datetime:
    return current_app.config["CLOCK"]()


def register(app: Flask) -> None:
    app.cli.add_command(prune_command)
    app.cli.add_command(users)


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Delete sessions that ended more than PRUNE_AFTER_DAYS ago and security events
    older than SECURITY_EVENT_RETENTION_DAYS, a batch at a time."""
    # Commits batch by batch: see retention.py.
    pruned = retention.prune(db.session, current_app.extensions["retention_policy"], now=now())
    config = current_app.config
    click.echo(
        f"Removed {_count(pruned.sessions, 'session')} (ended more than {config['PRUNE_AFTER_DAYS']} days ago) "
        f"and {_count(pruned.security_events, 'security event')} "
        f"(older than {config['SECURITY_EVENT_RETENTION_DAYS']} days)."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# An AppGroup runs each of its commands inside an app context.
users = AppGroup("users", help="Create, disable, enable and sign out user accounts.")


def _unknown(email: str) -> click.ClickException:
    return click.ClickException(f"No account has the email {accounts.normalize_email(email)!r}.")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line, as `echo "$PASSWORD" | flask users create ...` sends it.
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("create")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of a prompt.")
def create_user(email: str, password_stdin: bool) -> None:
    """Create an account for EMAIL."""
    normalized = accounts.normalize_email(email)
    if not accounts.is_valid_email(normalized):
        raise click.ClickException(f"{email!r} is not an email address.")
    password = _read_password(password_stdin)
    if not passwords.MIN_LENGTH <= len(password) <= passwords.MAX_LENGTH:
        raise click.ClickException(
            f"The password must have {passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters."
        )
    try:
        with unit_of_work(db.session):
            user = accounts.create_user(
                db.session, email, password, rounds=current_app.config["BCRYPT_ROUNDS"], now=now()
            )
    except accounts.EmailTaken:
        raise click.ClickException(f"An account with the email {normalized!r} already exists.") from None
    click.echo(f"Created account {user.email}.")


@users.command("disable")
@click.argument("email")
def disable_user(email: str) -> None:
    """Refuse sign-in to EMAIL and end every one of its sessions now."""
    try:
        with unit_of_work(db.session):
            user, ended = accounts.disable_user(db.session, email, now=now(), device=OPERATOR)
    except accounts.UnknownUser:
        raise _unknown(email) from None
    click.echo(f"Disabled {user.email}; ended {_count(ended, 'session')}.")


@users.command("enable")
@click.argument("email")
def enable_user(email: str) -> None:
    """Let EMAIL sign in again."""
    try:
        with unit_of_work(db.session):
            user, was_disabled = accounts.enable_user(db.session, email, now=now(), device=OPERATOR)
    except accounts.UnknownUser:
        raise _unknown(email) from None
    click.echo(f"Enabled {user.email}." if was_disabled else f"{user.email} was not disabled; nothing changed.")


@users.command("sign-out")
@click.argument("email")
def sign_out_user(email: str) -> None:
    """End every session of EMAIL; the account may sign in again."""
    try:
        with unit_of_work(db.session):
            user, ended = accounts.sign_out_everywhere(db.session, email, now=now(), device=OPERATOR)
    except accounts.UnknownUser:
        raise _unknown(email) from None
    click.echo(f"Signed {user.email} out everywhere; ended {_count(ended, 'session')}.")


@users.command("reset-link")
@click.argument("email")
def reset_link(email: str) -> None:
    """Print a one-time link that lets EMAIL choose a new password (for an operator to pass
    on when the site sends no email). It works once, for PASSWORD_RESET_TTL seconds."""
    user = accounts.find_user(db.session, email)
    if user is None:
        raise _unknown(email)
    if user.disabled_at is not None:
        raise click.ClickException(f"{user.email} is disabled: enable it first (flask users enable {user.email}).")
    policy = current_app.extensions["recovery_policy"]
    token = recovery.make_link_token(user, recovery.LinkPurpose.RESET, policy=policy, now=now())
    try:
        link = mail.public_link("reset.reset_password", token=token)
    except mail.NoPublicURL as error:
        raise click.ClickException(f"{error} Set it, e.g. PUBLIC_URL=https://app.example.com") from None
    click.echo(link)
    click.echo(
        f"It works once, for {policy.reset_ttl.total_seconds() / 60:g} minutes, and only until the password changes. "
        "Send it to the account's owner only.",
        err=True,
    )
