"""Account recovery: the links of the password-reset email and of the "Not you?" link in
a new-sign-in email, and what using them does. Plain Python, no Flask.

A link's token is stateless, as Django's `PasswordResetTokenGenerator`: the user's id,
when it was issued, and an HMAC-SHA256 over both, the link's purpose and the user's
current password hash, under a key derived from `SECRET_KEY` (fallback secrets still
verify). Nothing stored lets anyone rebuild a link without the secret, and every link of
a user dies the moment the password changes, which is also what makes a reset link
single use: using it changes the password. Two requests racing on one link are settled
by a compare-and-set on the password hash, so only one of them resets.

Like the session engine, the functions here add and flush and never commit.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session as DbSession

from . import accounts, passwords, sessions
from .devices import Device
from .models import User
from .security_events import EventKind, devices_signed_out, record_event
from .sessions import EndReason
from .tokens import base36, derive_key, mac

# A new-sign-in email may be read days later. Its link works once: using it replaces the
# password (with an unusable one), which every link is made over.
SECURE_LINK_TTL = timedelta(days=7)
# A clock running a little behind another worker's must not refuse a link just issued.
CLOCK_SKEW = timedelta(minutes=5)

_TOKEN = re.compile(r"([1-9][0-9]{0,17})\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{43})")


class LinkPurpose(enum.Enum):
    RESET = b"webapp/v1/password-reset-link"
    SECURE = b"webapp/v1/secure-account-link"


class InvalidLink(Exception):
    """The link is not one we issued, has expired, or died with a password change."""


@dataclass(frozen=True)
class RecoveryPolicy:
    """The keys and lifetimes of recovery links, from the app's config."""

    keys: Mapping[LinkPurpose, tuple[bytes, ...]]  # current secret's key first
    reset_ttl: timedelta
    secure_ttl: timedelta = SECURE_LINK_TTL

    @classmethod
    def from_config(cls, config: Mapping) -> RecoveryPolicy:
        reset_ttl = timedelta(seconds=config["PASSWORD_RESET_TTL"])
        return cls.from_secrets(config["SECRET_KEY"], config["SECRET_KEY_FALLBACKS"], reset_ttl=reset_ttl)

    @classmethod
    def from_secrets(cls, secret_key: str, fallbacks: Sequence[str] = (), *, reset_ttl: timedelta) -> RecoveryPolicy:
        all_secrets = [secret_key, *fallbacks]
        keys = {purpose: tuple(derive_key(secret, purpose.value) for secret in all_secrets) for purpose in LinkPurpose}
        return cls(keys=keys, reset_ttl=reset_ttl)

    def ttl(self, purpose: LinkPurpose) -> timedelta:
        return self.reset_ttl if purpose is LinkPurpose.RESET else self.secure_ttl


def _mac(key: bytes, user: User, issued: int) -> str:
    return mac(key, b"\x00".join([str(user.id).encode(), str(issued).encode(), user.password_hash.encode()]))


def make_link_token(user: User, purpose: LinkPurpose, *, policy: RecoveryPolicy, now: datetime) -> str:
    """A token for one link of `user`: `<user id>.<issued, base 36>.<mac>`."""
    issued = int(now.timestamp())
    return f"{user.id}.{base36(issued)}.{_mac(policy.keys[purpose][0], user, issued)}"


def user_for_link(
    db_session: DbSession, token: str, purpose: LinkPurpose, *, policy: RecoveryPolicy, now: datetime
) -> User:
    """The user a live link of `purpose` belongs to. Raises `InvalidLink`: malformed,
    forged, another purpose's, expired, the password changed since, or the account is
    disabled. Reads only."""
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise InvalidLink()
    user_id, issued_text, presented = int(match[1]), int(match[2], 36), match[3]
    try:
        issued = datetime.fromtimestamp(issued_text, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidLink() from None
    if not now - policy.ttl(purpose) <= issued <= now + CLOCK_SKEW:
        raise InvalidLink()
    user = db_session.get(User, user_id) if user_id <= 2**31 - 1 else None
    if user is None or user.disabled_at is not None:
        raise InvalidLink()
    if not any(hmac.compare_digest(presented, _mac(key, user, issued_text)) for key in policy.keys[purpose]):
        raise InvalidLink()
    return user


@dataclass(frozen=True)
class PasswordReset:
    user_id: int
    email: str
    devices_signed_out: int


def reset_password(
    db_session: DbSession,
    token: str,
    new_password: str,
    *,
    policy: RecoveryPolicy,
    rounds: int,
    now: datetime,
    device: Device = Device(),
) -> PasswordReset:
    """Set a new password through a reset link: end every session of the user (every
    browser and every bearer client, this browser's too: it signs in again with the new
    password) and record PASSWORD_RESET. Raises `InvalidLink`, also when another request
    used the same link first. Writes; does not commit."""
    user = user_for_link(db_session, token, LinkPurpose.RESET, policy=policy, now=now)
    new_hash = passwords.hash_password(new_password, rounds=rounds)
    # Of two requests racing on one link (or a reset and a password change), only the
    # first replaces the hash the link was made over; the second writes nothing.
    if not accounts.replace_password_hash(db_session, user, new_hash, now=now):
        raise InvalidLink()
    ended = sessions.revoke_other_sessions(
        db_session, user_id=user.id, keep_session_id=None, now=now, reason=EndReason.PASSWORD_CHANGED
    )
    record_event(
        db_session,
        user_id=user.id,
        kind=EventKind.PASSWORD_RESET,
        now=now,
        device=device,
        detail=devices_signed_out(ended, other=False),
    )
    return PasswordReset(user_id=user.id, email=user.email, devices_signed_out=ended)


@dataclass(frozen=True)
class SecuredAccount:
    user_id: int
    devices_signed_out: int
    reset_token: str  # the next step: a new password


def secure_account(
    db_session: DbSession, token: str, *, policy: RecoveryPolicy, now: datetime, device: Device = Device()
) -> SecuredAccount:
    """The "Not you?" link: sign every device of the user out, make the password unusable
    (whoever signed in knows it, and would sign in again at once), and hand back a fresh
    reset link for the owner to choose a new one. The link dies with it: it works once.
    Raises `InvalidLink`. Writes; does not commit."""
    user = user_for_link(db_session, token, LinkPurpose.SECURE, policy=policy, now=now)
    if not accounts.replace_password_hash(db_session, user, passwords.unusable_hash(), now=now):
        raise InvalidLink()
    ended = sessions.revoke_other_sessions(
        db_session, user_id=user.id, keep_session_id=None, now=now, reason=EndReason.SIGNED_OUT_BY_USER
    )
    record_event(
        db_session,
        user_id=user.id,
        kind=EventKind.SIGNED_OUT_EVERYWHERE,
        now=now,
        device=device,
        detail=devices_signed_out(ended, other=False),
    )
    reset_token = make_link_token(user, LinkPurpose.RESET, policy=policy, now=now)
    return SecuredAccount(user_id=user.id, devices_signed_out=ended, reset_token=reset_token)
