"""Sign-in limits: what one client, one account and one process may spend on signing in.

Each view that checks a password validates its form or JSON body first and then runs
the check inside `sign_in_attempt` (the password form: `limit_password_confirmation`). A
malformed request is answered before anything is counted, so it creates no key in the
storage. Then, in this order:

1. Every attempt from one address, right or wrong (`SIGN_IN_ATTEMPTS_PER_IP`). Each
   costs a bcrypt check (about 210 ms at cost 12): one client must not spend the CPU by
   signing in successfully again and again. This also bounds the keys one client can
   create below. Refusals are no attack on an account: no security event.
2. Failed attempts, per account (`LOGIN_LIMIT_PER_ACCOUNT`, keyed by a digest of the
   normalised email, and only for something that can be an email) and per address
   (`LOGIN_LIMIT_PER_IP`). A browser with a device cookie naming the account
   (`auth/device_cookie.py`) has its own small budget instead (`LOGIN_LIMIT_PER_DEVICE`),
   so that nobody can lock a user out by failing on purpose, even from the user's own
   address. Registering counts per address only: trying an address that has an account
   must not lock its owner out. A breach is a security event of the account.
3. New sessions per user per hour (`NEW_SESSIONS_PER_USER_PER_HOUR`), counted in the
   sessions table, before the password is checked: the right password, from any number
   of addresses, cannot start sessions without end either. Reaching it is an event too.
4. Password checks at once in this process (`MAX_CONCURRENT_PASSWORD_CHECKS`): one that
   finds no free slot within `PASSWORD_CHECK_WAIT` is answered 503 with `Retry-After`
   rather than queued, so that a burst of sign-ins cannot stall every page.

Limits 1 to 3 answer 429 with `Retry-After`. No response carries `X-RateLimit-*`
headers: they would tell anybody how much of an account's budget is left.

Counting only failures must not let parallel requests slip through: an attempt takes its
place in each failure budget atomically before its password is checked (one INCR), and
`settle_sign_in_attempt` gives the places back after the request unless the view called
`note_failed_sign_in()`. Checking first and counting after would let every request in
flight at once pass the same check.

The counters live in the storage `RATELIMIT_STORAGE_URI` names (the `limits` library, the
engine under Flask-Limiter, builds it; fixed windows): `memory://` by default, Redis
when it names one. If the
storage is down, sign-in keeps working without limits 1 and 2: an outage of the limiter
must not lock everybody out. It is logged as one warning a minute.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps

import limits
from flask import Flask, current_app, request
from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter
from sqlalchemy import Select, select
from werkzeug.exceptions import ServiceUnavailable, TooManyRequests

from .. import accounts
from ..database import unit_of_work
from ..extensions import db
from ..metrics import SignInOutcome, current_metrics
from ..models import Session
from ..security_events import record_sign_in_rate_limited
from .device_cookie import device_nonce
from .hooks import current_device, current_time
from .request_auth import current_auth

OUTAGE_REPORT_INTERVAL = timedelta(minutes=1)
# Where an operator looks for the limiter's health: Flask-Limiter's logger, as before.
OUTAGE_LOGGER = logging.getLogger("flask-limiter")
NEW_SESSION_WINDOW = timedelta(hours=1)
# Seconds a password check waits for a free slot: about two bcrypt checks at cost 12.
# Longer, and the threads of a busy worker would all be waiting here while pages queue.
PASSWORD_CHECK_WAIT = 0.5

# The error page adds when to try again, from Retry-After (errors.py).
TOO_MANY_ATTEMPTS = "Too many failed sign-in attempts."
TOO_MANY_FROM_ADDRESS = "Too many sign-in attempts from this address."
TOO_MANY_NEW_SESSIONS = "Too many sign-ins to this account in the last hour."
BUSY = "Signing in is busy right now. Please try again in a moment."
TOO_MANY_RESET_REQUESTS = "Too many password reset requests from this address."


class PasswordCheckSlots:
    """At most `size` password checks at once: bcrypt is the costly part of a sign-in, and
    it runs outside the GIL, so threads of one process can fill every core with it."""

    def __init__(self, size: int, *, wait: float = PASSWORD_CHECK_WAIT):
        self._semaphore = threading.BoundedSemaphore(size)
        self.wait = wait

    def try_slot(self) -> bool:
        """Take a slot, waiting at most `wait` seconds for one. Returns whether it got one,
        which the caller then gives back with `release`."""
        return self._semaphore.acquire(timeout=self.wait)

    def release(self) -> None:
        self._semaphore.release()


@dataclass(frozen=True)
class SignInLimits:
    """One app's sign-in limits, built from its config when the app is created."""

    strategy: RateLimiter  # a fixed window (`limits`), on this app's storage
    attempts_per_ip: tuple[RateLimitItem, ...]
    failures_per_account: tuple[RateLimitItem, ...]
    failures_per_ip: tuple[RateLimitItem, ...]
    failures_per_device: tuple[RateLimitItem, ...]
    new_sessions_per_hour: int
    password_checks: PasswordCheckSlots
    reset_requests_per_ip: tuple[RateLimitItem, ...]
    reset_emails_per_address: tuple[RateLimitItem, ...]

    @classmethod
    def from_config(cls, config: Mapping, strategy: RateLimiter) -> SignInLimits:
        return cls(
            strategy=strategy,
            attempts_per_ip=tuple(limits.parse_many(config["SIGN_IN_ATTEMPTS_PER_IP"])),
            failures_per_account=tuple(limits.parse_many(config["LOGIN_LIMIT_PER_ACCOUNT"])),
            failures_per_ip=tuple(limits.parse_many(config["LOGIN_LIMIT_PER_IP"])),
            failures_per_device=tuple(limits.parse_many(config["LOGIN_LIMIT_PER_DEVICE"])),
            new_sessions_per_hour=int(config["NEW_SESSIONS_PER_USER_PER_HOUR"]),
            password_checks=PasswordCheckSlots(int(config["MAX_CONCURRENT_PASSWORD_CHECKS"])),
            reset_requests_per_ip=tuple(limits.parse_many(config["LOGIN_LIMIT_PER_IP"])),
            reset_emails_per_address=tuple(limits.parse_many(config["PASSWORD_RESET_EMAILS_PER_ADDRESS"])),
        )


def init_app(app: Flask) -> None:
    """The limits' place in the request pipeline (see `auth.init_app`): after the view,
    the places an attempt that did not fail took are given back. Nothing runs before a
    request: only the views that check a password count anything (`sign_in_attempt`).

    The counters are the `limits` library's (Flask-Limiter's own engine): a fixed-window
    strategy on the storage RATELIMIT_STORAGE_URI names. Flask-Limiter itself is not
    used: its hook would look for limits on every request of every page, and there are
    none to find outside the sign-in views."""
    app.after_request(settle_sign_in_attempt)
    storage = storage_from_string(app.config["RATELIMIT_STORAGE_URI"], **app.config["RATELIMIT_STORAGE_OPTIONS"])
    app.extensions["sign_in_limits"] = SignInLimits.from_config(app.config, FixedWindowRateLimiter(storage))


def _limits() -> SignInLimits:
    return current_app.extensions["sign_in_limits"]


# --- the attempt ----------------------------------------------------------------------------

# (key, scope) of a counter, as `limits` orders them: the storage's key is made of
# both and the limit, e.g. "LIMITER/ip:192.0.2.1/sign-in-ip/50/15/minute".
Counter = tuple[str, str]


def note_failed_sign_in() -> None:
    """Mark this request as a failed credential check, so it counts against the limits."""
    current_auth().sign_in_failed = True


@contextmanager
def sign_in_attempt(email: str | None, *, starts_session: bool = False) -> Iterator[None]:
    """Count one attempt, whose form or body is valid, and hold a password-check slot for
    the block, which checks the password (the view calls `note_failed_sign_in()` when it
    is wrong).

    `email` is the account tried; None when no account's budget may be charged (a
    registration). `starts_session`: a success starts a session, so the account's new
    sessions are counted first.

    Raises `TooManyRequests` (429, Retry-After) when a limit is reached and
    `ServiceUnavailable` (503, Retry-After) when no slot is free soon enough.
    """
    sign_in_limits = _limits()
    try:
        _count_attempt(sign_in_limits, email, starts_session=starts_session)
    except TooManyRequests:
        if starts_session:  # a sign-in, for the metrics; not a registration or a confirmation
            current_metrics().sign_in(SignInOutcome.LIMITED)
        raise
    if not sign_in_limits.password_checks.try_slot():
        if starts_session:
            current_metrics().sign_in(SignInOutcome.BUSY)
        raise ServiceUnavailable(BUSY, retry_after=1)
    try:
        yield
    finally:
        sign_in_limits.password_checks.release()


def _count_attempt(sign_in_limits: SignInLimits, email: str | None, *, starts_session: bool) -> None:
    """Take this attempt's place in every budget it is charged to. Raises `TooManyRequests`
    when one of them is spent."""
    address = client_address()
    every_attempt = (f"ip:{address}", "sign-in-attempts-ip")
    for item in sign_in_limits.attempts_per_ip:
        if not _take_place(item, every_attempt):
            raise TooManyRequests(TOO_MANY_FROM_ADDRESS, retry_after=_retry_after(item, every_attempt))

    email = None if email is None else accounts.normalize_email(email)
    nonce = None if email is None else device_nonce(email)
    if nonce is not None:
        # A browser that signed in to this account before: its own budget, nobody else's.
        budgets = [(sign_in_limits.failures_per_device, (f"device:{nonce}", "sign-in-device"), "this device")]
    else:
        budgets = [(sign_in_limits.failures_per_ip, (f"ip:{address}", "sign-in-ip"), "this address")]
        if email is not None and accounts.is_valid_email(email):
            per_account = (account_key(email), "sign-in-account")
            budgets.append((sign_in_limits.failures_per_account, per_account, "this account"))
    places = current_auth().sign_in_places
    for items, counter, whose in budgets:
        for item in items:
            taken = _take_place(item, counter)
            places.append((item, counter))
            if not taken:
                _record_refusal(email, f"too many failed attempts for {whose}")
                raise TooManyRequests(TOO_MANY_ATTEMPTS, retry_after=_retry_after(item, counter))

    if starts_session and email is not None and accounts.is_valid_email(email):
        _check_new_sessions(email, cap=sign_in_limits.new_sessions_per_hour)


def settle_sign_in_attempt(response):
    """After every request: give back the places a sign-in attempt took in the failure
    budgets, unless it was marked as failed (a success, a form error, a refusal, a busy
    answer: none of them counts)."""
    auth = current_auth()
    if not auth.sign_in_places or auth.sign_in_failed:
        return response
    storage = _limits().strategy.storage
    for item, counter in auth.sign_in_places:
        try:
            storage.incr(item.key_for(*counter), item.get_expiry(), amount=-1)
        except _storage_errors() as error:
            # The limits fail open when their storage is down; so does the refund.
            _report_storage_outage(error)
    return response


def limit_password_confirmation(form_class: type) -> Callable:
    """For a signed-in view that confirms the current password (the password change):
    once a POST's `form_class` validates, the whole view is a `sign_in_attempt` for the
    signed-in account. A form with errors checks no password and is not counted."""

    def decorate(view):
        @wraps(view)
        def confirming(*args, **kwargs):
            signed_in = current_auth().signed_in
            if request.method != "POST" or signed_in is None or not form_class().validate():
                return view(*args, **kwargs)
            # Someone holding a stolen session must not guess the password freely.
            with sign_in_attempt(signed_in.email):
                return view(*args, **kwargs)

        return confirming

    return decorate


def reset_request_may_email(email: str) -> bool:
    """Count one valid request of the forgot-password form, for `email`.

    Per address of the client (`LOGIN_LIMIT_PER_IP`, a budget of its own): a 429 with
    Retry-After, as for sign-in. Per email address (`PASSWORD_RESET_EMAILS_PER_ADDRESS`),
    counted whether or not an account has it: False once full, and the form gives its
    usual answer but sends nothing. So nobody can flood an inbox through this form, and
    the answer never tells whether an address has an account.
    """
    reset_limits = _limits()
    counter = (f"ip:{client_address()}", "password-reset-ip")
    for item in reset_limits.reset_requests_per_ip:
        if not _take_place(item, counter):
            raise TooManyRequests(TOO_MANY_RESET_REQUESTS, retry_after=_retry_after(item, counter))
    per_address = (account_key(email), "password-reset-account")
    return all(_take_place(item, per_address) for item in reset_limits.reset_emails_per_address)


# --- counters ---------------------------------------------------------------------------------


def account_key(email: str) -> str:
    # A digest: the key stays short however long the input, and no email sits in Redis.
    digest = hashlib.sha256(accounts.normalize_email(email).encode("utf-8", "surrogatepass")).hexdigest()
    return f"account:{digest}"


def client_address() -> str:
    """The client's address as the limits count it. After ProxyFix, `remote_addr` is the
    client's (TRUSTED_PROXIES). An IPv6 client counts by its /64: one subscriber usually
    holds a whole /64, and each of its addresses apart would be a budget of its own."""
    address = request.remote_addr or ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _take_place(item: RateLimitItem, counter: Counter) -> bool:
    """One atomic INCR: False when the budget was already full. True when the storage is
    down (fail open)."""
    try:
        return _limits().strategy.hit(item, *counter)
    except _storage_errors() as error:
        _report_storage_outage(error)
        return True


def _retry_after(item: RateLimitItem, counter: Counter) -> int:
    """Whole seconds until the window of a full budget ends."""
    try:
        reset_at = _limits().strategy.get_window_stats(item, *counter).reset_time
    except _storage_errors():
        return int(item.get_expiry())
    return max(1, math.ceil(reset_at - time.time()))


def _record_refusal(email: str | None, detail: str) -> None:
    """A security event for the account that was tried, if it exists."""
    if email is None:
        return
    with unit_of_work(db.session):
        user = accounts.find_user(db.session, email)
        if user is not None:
            record_sign_in_rate_limited(
                db.session, user_id=user.id, now=current_time(), device=current_device(), detail=detail
            )


# --- new sessions per user --------------------------------------------------------------------


def recent_sessions(*, user_id: int, since: datetime, cap: int) -> Select:
    """When the user's newest sessions (at most `cap`) started after `since`, newest first.

    Sessions that ended count too: signing out and in again is one more bcrypt check. A
    session's `last_active_at` starts at `created_at` and only moves forward, so the
    condition on it changes no answer, but lets the index on (user_id, last_active_at)
    read only the sessions active since then instead of every session the user has had.
    """
    return (
        select(Session.created_at)
        .where(Session.user_id == user_id, Session.last_active_at > since, Session.created_at > since)
        .order_by(Session.created_at.desc())
        .limit(cap)
    )


def _check_new_sessions(email: str, *, cap: int) -> None:
    """Refuse (429) a sign-in to an account that started `cap` sessions in the last hour.

    Checked before the password, so refusing costs no bcrypt. Only the password can bring
    an account to its cap; while it lasts, the 429 also tells a guesser that the account
    exists. Sign-ins in flight at once may each pass it: it bounds a stream of sign-ins,
    and the limits per address and the password-check slots bound a burst.
    """
    now = current_time()
    user = accounts.find_user(db.session, email)
    if user is None:
        return
    since = now - NEW_SESSION_WINDOW
    started = db.session.execute(recent_sessions(user_id=user.id, since=since, cap=cap)).scalars().all()
    if len(started) < cap:
        return
    _record_refusal(email, "too many new sign-ins in an hour")
    frees_at = started[cap - 1] + NEW_SESSION_WINDOW
    raise TooManyRequests(TOO_MANY_NEW_SESSIONS, retry_after=max(1, math.ceil((frees_at - now).total_seconds())))


# --- storage outages ---------------------------------------------------------------------------


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What the storage raises when it is out of reach. Not memory://'s `ValueError`,
    which would swallow unrelated bugs."""
    storage = _limits().strategy.storage
    if isinstance(storage, MemoryStorage):
        return (StorageError,)
    base = storage.base_exceptions
    return (StorageError, *(base if isinstance(base, tuple) else (base,)))


def _report_storage_outage(error: BaseException) -> None:
    """One warning a minute per app while the storage is down, not one per sign-in. On
    Flask-Limiter's logger, where an operator looks for the limiter's health."""
    now = current_time()
    quiet_until = current_app.extensions.get("ratelimit_outage_quiet_until")
    if quiet_until is not None and now < quiet_until:
        return
    current_app.extensions["ratelimit_outage_quiet_until"] = now + OUTAGE_REPORT_INTERVAL
    OUTAGE_LOGGER.warning(
        "rate limit storage unreachable, sign-in limits are off until it returns: %s: %s (next report in %ds)",
        type(error).__name__,
        error,
        OUTAGE_REPORT_INTERVAL.total_seconds(),
    )
