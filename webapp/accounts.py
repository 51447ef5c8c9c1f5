"""User accounts: registration, the credential check, password change. Plain Python."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from . import passwords
from .models import User


class EmailTaken(Exception):
    """Another account already uses this email."""


def normalize_email(email: str) -> str:
    return email.strip().casefold()


def find_user(db: DbSession, email: str) -> User | None:
    return db.execute(select(User).where(User.email == normalize_email(email))).scalar_one_or_none()


def create_user(db: DbSession, email: str, password: str, *, rounds: int, now: datetime) -> User:
    """Create an account. Raises `EmailTaken`; the unique constraint is the real check, so
    two sign-ups racing on one email cannot both win. Commits."""
    user = User(email=normalize_email(email), password_hash=passwords.hash_password(password, rounds=rounds), created_at=now)
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise EmailTaken(email) from None
    return user


def check_credentials(db: DbSession, email: str, password: str, *, rounds: int) -> User | None:
    """The user these credentials belong to, or None.

    An unknown email, a wrong password and a disabled account all cost one bcrypt check
    and give the same None, so neither the answer nor its timing tells them apart.
    """
    user = find_user(db, email)
    if user is None:
        passwords.verify_password(password, passwords.dummy_hash(rounds))
        return None
    if not passwords.verify_password(password, user.password_hash) or user.disabled_at is not None:
        return None
    return user


def set_password(db: DbSession, user: User, new_password: str, *, rounds: int, now: datetime) -> None:
    """Replace the user's password; the caller ends other sessions and commits."""
    user.password_hash = passwords.hash_password(new_password, rounds=rounds)
    user.password_changed_at = now
