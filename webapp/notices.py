"""The emails that tell a user what happened to their account, built from what the view
knows once its unit of work has committed: a new sign-in from a device this account has
not used, a password changed, a password reset."""

from __future__ import annotations

from datetime import datetime

from flask import current_app

from . import recovery
from .devices import Device, device_words, exact_time
from .mail import EmailKind, can_send_email, public_link, send_email
from .models import User
from .recovery import LinkPurpose


def _about(device: Device, now: datetime) -> dict[str, str]:
    return {
        "device": device_words(device.user_agent, client_name=device.client_name),
        "ip_address": device.ip_address or "unknown",
        "time": exact_time(now),
    }


def new_sign_in(user: User, *, device: Device, now: datetime) -> None:
    """The "new sign-in to your account" email, with the "Not you?" link that signs every
    device out."""
    # Checked first: in production without a mail server there may be no PUBLIC_URL
    # either, and so no link to build.
    if not can_send_email():
        return
    policy: recovery.RecoveryPolicy = current_app.extensions["recovery_policy"]
    token = recovery.make_link_token(user, LinkPurpose.SECURE, policy=policy, now=now)
    send_email(
        EmailKind.NEW_SIGN_IN,
        to=user.email,
        user_id=user.id,
        secure_link=public_link("reset.secure_account", token=token),
        secure_link_days=policy.secure_ttl.days,
        **_about(device, now),
    )


def password_changed(*, user_id: int, email: str, device: Device, now: datetime) -> None:
    if not can_send_email():
        return
    send_email(
        EmailKind.PASSWORD_CHANGED,
        to=email,
        user_id=user_id,
        forgot_link=public_link("reset.forgot"),
        **_about(device, now),
    )


def password_reset(reset: recovery.PasswordReset, *, device: Device, now: datetime) -> None:
    if not can_send_email():
        return
    send_email(
        EmailKind.PASSWORD_RESET_DONE,
        to=reset.email,
        user_id=reset.user_id,
        devices=reset.devices_signed_out,
        forgot_link=public_link("reset.forgot"),
        **_about(device, now),
    )
