"""User accounts: registration, the credential check, password change. Plain Python.

Like the session engine, these functions add and flush and never commit: the caller
wraps each in its unit of work (`database.unit_of_work`).
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from . import passwords, sessions
from .devices import Device
from .models import User
from .security_events import EventKind, devices_signed_out, record_event
from .sessions import EndReason

# Deliverability is proven by use, not by a parser: one @, a dot after it, and no
# space or control character anywhere.
EMAIL_PATTERN = re.compile(r"\A[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+\Z")
MAX_EMAIL_LENGTH = 320


def is_valid_email(email: str) -> bool:
    return len(email) <= MAX_EMAIL_LENGTH and EMAIL_PATTERN.fullmatch(email) is not None


class EmailTaken(Exception):
    """Another account already uses this email."""


def normalize_email(email: str) -> str:
    return email.strip().casefold()


def encodes_as_utf8(text: str) -> bool:
    """False for text with lone surrogates (JSON can carry them; no database takes them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_user(db_session: DbSession, email: str) -> User | None:
    if "\x00" in email or not encodes_as_utf8(email):
        # No stored email holds a NUL or a lone surrogate, and the database drivers
        # refuse both even in a query.
        return None
    return db_session.execute(select(User).where(User.email == normalize_email(email))).scalar_one_or_none()


def create_user(db_session: DbSession, email: str, password: str, *, rounds: int, now: datetime) -> User:
    """Create an account. Raises `EmailTaken`; the unique constraint is the real check, so
    two sign-ups racing on one email cannot both win. Writes (and flushes, to find out);
    does not commit. After `EmailTaken` the unit of work must be rolled back."""
    user = User(
        email=normalize_email(email), password_hash=passwords.hash_password(password, rounds=rounds), created_at=now
    )
    db_session.add(user)
    try:
        db_session.flush()
    except IntegrityError:
        raise EmailTaken(email) from None
    return user


def check_credentials(db_session: DbSession, email: str, password: str, *, rounds: int) -> User | None:
    """The user these credentials belong to, or None.

    An unknown email, a wrong password and a disabled account all cost one bcrypt check
    and give the same None, so neither the answer nor its timing tells them apart.
    """
    user = find_user(db_session, email)
    if user is None or not passwords.is_usable(user.password_hash):
        # An account whose password was made unusable ("Not you?") costs the same too.
        passwords.verify_password(password, passwords.dummy_hash(rounds))
        return None
    if not passwords.verify_password(password, user.password_hash) or user.disabled_at is not None:
        return None
    return user


def replace_password_hash(db_session: DbSession, user: User, new_hash: str, *, now: datetime) -> bool:
    """Replace the password hash of `user` if it is still the one this request read (and
    checked): a compare-and-set, so that of a password change and a reset (or two
    resets) racing, the second finds the hash changed and writes nothing. Returns whether
    it replaced it; afterwards `user` reads the database again. Writes; does not commit."""
    replaced = db_session.execute(
        update(User)
        .where(User.id == user.id, User.password_hash == user.password_hash)
        .values(password_hash=new_hash, password_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    db_session.expire(user)
    return replaced.rowcount == 1


class WrongPassword(Exception):
    """The current password given to confirm a change is not the user's."""


class UnknownUser(LookupError):
    """No account has this email."""


def change_password(
    db_session: DbSession,
    *,
    user_id: int,
    session_id: str,
    current_password: str,
    new_password: str,
    rounds: int,
    policy: sessions.SessionPolicy,
    now: datetime,
    device: Device = Device(),
) -> sessions.IssuedTokens:
    """Change the password of `user_id`, signed in on session `session_id`, and return
    the tokens of the new session this browser goes on with.

    Sets the new password, ends every session of the user (this one included: a copy of
    any of its earlier tokens, in a thief's cookie jar, must die with it), starts a new
    session for this browser (new id, counter 0, "remember me" as before) and records
    PASSWORD_CHANGED. Raises `WrongPassword` (nothing written) and
    `sessions.SessionInactive` (this session ended meanwhile, or a reset replaced the
    password since it was checked). Writes; does not commit:
    the caller commits all of it or none.
    """
    user = db_session.get(User, user_id)
    if (
        user is None
        or user.disabled_at is not None
        or not passwords.verify_password(current_password, user.password_hash)
    ):
        raise WrongPassword()
    this_session = sessions.session_times(db_session, session_id, user_id=user_id, now=now)
    new_hash = passwords.hash_password(new_password, rounds=rounds)
    # A reset (or another change) that committed since the check above ended this session
    # and replaced the hash: this change must not overwrite it.
    if not replace_password_hash(db_session, user, new_hash, now=now):
        raise sessions.SessionInactive()
    others = sessions.revoke_other_sessions(
        db_session, user_id=user_id, keep_session_id=session_id, now=now, reason=EndReason.PASSWORD_CHANGED
    )
    if not sessions.supersede_session(db_session, session_id, user_id=user_id, now=now):
        raise sessions.SessionInactive()
    issued = sessions.start_session(
        db_session, user, policy=policy, now=now, device=device, persistent=this_session.persistent, event=None
    )
    record_event(
        db_session,
        user_id=user_id,
        kind=EventKind.PASSWORD_CHANGED,
        now=now,
        device=device,
        session_id=issued.session_id,
        detail=devices_signed_out(others),
    )
    return issued


def _require_user(db_session: DbSession, email: str) -> User:
    user = find_user(db_session, email)
    if user is None:
        raise UnknownUser(normalize_email(email))
    return user


def disable_user(db_session: DbSession, email: str, *, now: datetime, device: Device = Device()) -> tuple[User, int]:
    """Refuse sign-in to the account and end every one of its sessions at once (their
    unexpired access tokens included). Returns the user and how many sessions ended.
    Disabling a disabled account keeps its first `disabled_at`. Raises `UnknownUser`.
    Writes; does not commit."""
    user = _require_user(db_session, email)
    if user.disabled_at is None:
        user.disabled_at = now
    ended = sessions.revoke_other_sessions(
        db_session, user_id=user.id, keep_session_id=None, now=now, reason=EndReason.ACCOUNT_DISABLED
    )
    # Recorded even when no device was signed in: the account itself changed.
    detail = devices_signed_out(ended, other=False)
    record_event(db_session, user_id=user.id, kind=EventKind.ACCOUNT_DISABLED, now=now, device=device, detail=detail)
    return user, ended


def enable_user(db_session: DbSession, email: str, *, now: datetime, device: Device = Device()) -> tuple[User, bool]:
    """Let a disabled account sign in again. Returns the user and whether it was
    disabled. Raises `UnknownUser`. Writes; does not commit."""
    user = _require_user(db_session, email)
    was_disabled = user.disabled_at is not None
    if was_disabled:
        user.disabled_at = None
        record_event(db_session, user_id=user.id, kind=EventKind.ACCOUNT_ENABLED, now=now, device=device)
    return user, was_disabled


def sign_out_everywhere(
    db_session: DbSession, email: str, *, now: datetime, device: Device = Device()
) -> tuple[User, int]:
    """End every session of the account; it may sign in again. Returns the user and how
    many sessions ended. Raises `UnknownUser`. Writes; does not commit."""
    user = _require_user(db_session, email)
    ended = sessions.revoke_other_sessions(
        db_session, user_id=user.id, keep_session_id=None, now=now, reason=EndReason.SIGNED_OUT_BY_OPERATOR
    )
    if ended:
        detail = devices_signed_out(ended, other=False)
        kind = EventKind.ALL_SESSIONS_REVOKED
        record_event(db_session, user_id=user.id, kind=kind, now=now, device=device, detail=detail)
    return user, ended
