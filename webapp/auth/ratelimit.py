"""Rate limits on failed sign-ins, per account and per IP address.

Apply `limit_sign_in` to any view that checks a password (the sign-in form, the JSON
token endpoint) and call `note_failed_sign_in()` when the check fails. Only failed
attempts count, so a successful sign-in never trips a limit; once a limit is reached
every attempt is refused with 429 and `Retry-After`, the right password included, until
the window passes.

Counting only failures must not let parallel requests slip through: each attempt takes
its place in the budget atomically before the password is checked (Flask-Limiter's hit,
one INCR), and `refund_attempt_that_did_not_fail` gives the place back afterwards unless
the attempt failed. Checking first and counting after (Flask-Limiter's `deduct_when`)
would let every request in flight at once pass the same check.

The limits are shared (one scope per key kind), so failures on every endpoint wearing
`limit_sign_in` add up to one budget. Keys read the email from a form or a JSON body.

Storage comes from `RATELIMIT_STORAGE_URI` (Flask-Limiter reads that config key itself):
`memory://` by default, Redis when it names one. If the storage is down, sign-in keeps
working (`swallow_errors`): an outage of the limiter must not lock everybody out. It is
logged as a warning, once a minute (`StorageOutageLog`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from flask import Flask, current_app, has_app_context, request
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address
from limits.errors import StorageError
from limits.storage import MemoryStorage

from .. import accounts
from ..database import unit_of_work
from ..extensions import db, limiter
from ..security_events import record_sign_in_rate_limited
from .hooks import current_device, current_time
from .request_auth import current_auth

log = logging.getLogger(__name__)

OUTAGE_REPORT_INTERVAL = timedelta(minutes=1)


class StorageOutageLog(logging.Filter):
    """Flask-Limiter, told to swallow storage errors, logs each one at ERROR with a
    traceback: while Redis is down, one per sign-in. Let through the first of each
    minute per app, as one WARNING line that says what it means; drop the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not has_app_context() or not is_storage_outage(record):
            return True  # anything else: logged as it comes
        now = current_time()
        quiet_until = current_app.extensions.get("ratelimit_outage_quiet_until")
        if quiet_until is not None and now < quiet_until:
            return False
        current_app.extensions["ratelimit_outage_quiet_until"] = now + OUTAGE_REPORT_INTERVAL
        record.msg = (
            "rate limit storage unreachable, sign-in limits are off until it returns: %s: %s (next report in %ds)"
        )
        error = record.exc_info[1]
        record.args = (type(error).__name__, error, OUTAGE_REPORT_INTERVAL.total_seconds())
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


# What Flask-Limiter logs when it swallows an error of its storage.
_SWALLOWED_STORAGE_ERRORS = (
    "Failed to rate limit",
    "Failed to update rate limit headers",
    "Failed to deduct rate limit",
)


def is_storage_outage(record: logging.LogRecord) -> bool:
    """A swallowed error from a storage that can be out of reach (not memory://, whose
    `base_exceptions` is ValueError, which would claim unrelated bugs)."""
    if record.exc_info is None or not str(record.msg).startswith(_SWALLOWED_STORAGE_ERRORS):
        return False
    error = record.exc_info[1]
    if isinstance(error, StorageError):  # the storage's errors, when it wraps them
        return True
    return not isinstance(limiter.storage, MemoryStorage) and isinstance(error, limiter.storage.base_exceptions)


_storage_outage_log = StorageOutageLog()


def init_app(app: Flask) -> None:
    """The limiter's place in the request pipeline (see `auth.init_app`): its check
    before the view, and after it the refund of attempts that did not fail."""
    app.after_request(refund_attempt_that_did_not_fail)
    limiter.init_app(app)
    # Adding the same filter object twice is a no-op: one per process, however many apps.
    logging.getLogger("flask-limiter").addFilter(_storage_outage_log)


TOO_MANY_ATTEMPTS = "Too many failed sign-in attempts. Please wait a few minutes and try again."


def note_failed_sign_in() -> None:
    """Mark this request as a failed credential check, so it counts against the limits."""
    current_auth().sign_in_failed = True


_SCOPES = ("sign-in-account", "sign-in-ip")


def refund_attempt_that_did_not_fail(response):
    """After every request: give back the places a sign-in attempt took in the budgets,
    unless it was marked as failed (a success, a form error, a refusal: none counts)."""
    if current_auth().sign_in_failed:
        return response
    for request_limit in limiter.current_limits:
        if not set(_SCOPES) & set(request_limit.request_args):
            continue
        try:
            limiter.storage.incr(request_limit.key, request_limit.limit.get_expiry(), amount=-1)
        except limiter.storage.base_exceptions as error:
            # The limiter fails open when its storage is down; so does the refund.
            log.warning("could not refund a sign-in attempt: %s", error)
    return response


def submitted_email() -> str:
    """The email of this sign-in attempt, normalised, from a form or a JSON body; for a
    signed-in user confirming their password, their own email."""
    signed_in = current_auth().signed_in
    if signed_in is not None:
        return signed_in.email
    email = request.form.get("email")
    if email is None:
        body = request.get_json(silent=True)
        email = body.get("email") if isinstance(body, dict) else None
    return accounts.normalize_email(email) if isinstance(email, str) else ""


def account_key() -> str:
    # A digest: the key stays short however long the input, and no email sits in Redis.
    digest = hashlib.sha256(submitted_email().encode("utf-8", "surrogatepass")).hexdigest()
    return f"account:{digest}"


def ip_key() -> str:
    # After ProxyFix, `remote_addr` is the client's address (TRUSTED_PROXIES).
    return f"ip:{get_remote_address()}"


def record_rate_limited(request_limit: RequestLimit) -> None:
    """On a breach: a security event for the account that was tried, if it exists."""
    which = "this account" if "account:" in request_limit.key else "this address"
    with unit_of_work(db.session):
        user = accounts.find_user(db.session, submitted_email())
        if user is None:
            return
        record_sign_in_rate_limited(
            db.session,
            user_id=user.id,
            now=current_time(),
            device=current_device(),
            detail=f"too many failed attempts for {which}",
        )


def _per_account() -> str:
    return current_app.config["LOGIN_LIMIT_PER_ACCOUNT"]


def _per_ip() -> str:
    return current_app.config["LOGIN_LIMIT_PER_IP"]


_limit_per_account = limiter.shared_limit(
    _per_account,
    scope="sign-in-account",
    key_func=account_key,
    methods=["POST"],
    on_breach=record_rate_limited,
    error_message=TOO_MANY_ATTEMPTS,
)
_limit_per_ip = limiter.shared_limit(
    _per_ip,
    scope="sign-in-ip",
    key_func=ip_key,
    methods=["POST"],
    on_breach=record_rate_limited,
    error_message=TOO_MANY_ATTEMPTS,
)


def limit_sign_in(view):
    """Both sign-in limits on `view`; the view calls `note_failed_sign_in()` on failure."""
    return _limit_per_ip(_limit_per_account(view))
