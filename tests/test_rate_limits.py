"""Sign-in abuse: every attempt is counted per IP address; failed ones per account (or,
for a browser that signed in to it before, per device cookie) and per address, with 429,
Retry-After and a security event; new sessions per user are capped per hour; bcrypt
checks are bounded per process. Storage is memory:// here, and the real Redis on
127.0.0.1:6379 when it answers; a dead Redis fails open."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from bs4 import BeautifulSoup
from sqlalchemy import select

from webapp import passwords
from webapp.auth import ratelimit
from webapp.config import ConfigError, load_config
from webapp.extensions import db
from webapp.models import SecurityEvent

from .conftest import PASSWORD, AuthActions, csrf_token_from

REDIS_URL = "redis://127.0.0.1:6379/0"
NEW_PASSWORD = "another long passphrase"


def redis_answers() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5) as connection:
            return bool(connection.ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request) -> str:
    if request.param == "redis":
        if not redis_answers():
            pytest.skip(f"no Redis answers at {REDIS_URL}: the Redis variant needs one")
        return REDIS_URL
    return "memory://"


@pytest.fixture
def limits() -> dict:
    """Override with `parametrize` to change settings for one test (on both storages)."""
    return {}


@pytest.fixture
def app_config(storage_uri, limits):
    return {
        "RATELIMIT_STORAGE_URI": storage_uri,
        "LOGIN_LIMIT_PER_ACCOUNT": "3 per 15 minutes",
        "LOGIN_LIMIT_PER_IP": "5 per 15 minutes",
        **limits,
    }


def random_ip() -> str:
    # A fresh address per client: Redis keeps counters between tests and runs.
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def client_from(app, ip: str | None = None):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip or random_ip()
    return client


def fresh_email() -> str:
    """Redis keeps counters between runs, so names never repeat."""
    return f"alice-{secrets.token_hex(4)}@example.com"


@pytest.fixture
def email(app) -> str:
    """A fresh account, registered (and signed out) from an address of its own."""
    address = fresh_email()
    signup = client_from(app)
    assert AuthActions(signup).register(address).status_code == 302
    AuthActions(signup).logout()
    return address


def attempt(client, email, password):
    return AuthActions(client).login(email=email, password=password)


def token_attempt(client, email, password):
    return client.post("/api/auth/token", json={"email": email, "password": password, "client_name": "test"})


def change_password(client, current, new):
    token = csrf_token_from(client.get("/account/password").data)
    data = {"current_password": current, "new_password": new, "confirm": new, "csrf_token": token}
    return client.post("/account/password", data=data)


def rate_limited_events(app) -> list[SecurityEvent]:
    with app.app_context():
        return list(
            db.session.execute(select(SecurityEvent).where(SecurityEvent.kind == "sign_in_rate_limited")).scalars()
        )


def email_digest(email: str) -> str:
    """How the per-account counters name an email: a digest, so no address sits in Redis."""
    return hashlib.sha256(email.strip().casefold().encode()).hexdigest()


def sign_in_storage(app):
    """The storage the app's sign-in limits count in."""
    return app.extensions["sign_in_limits"].strategy.storage


def limit_counters(app, storage_uri: str, *markers: str) -> dict[str, int]:
    """The limiter's counters whose keys contain any of `markers` (an address, an email's
    digest), with their values."""
    if storage_uri.startswith("redis://"):
        with redis.Redis.from_url(storage_uri) as connection:
            keys = [key.decode() for key in connection.scan_iter(match="LIMITS:*", count=1000)]
            keys = [key for key in keys if any(marker in key for marker in markers)]
            return {key: int(connection.get(key) or 0) for key in keys}
    counters = sign_in_storage(app).storage
    return {key: value for key, value in list(counters.items()) if any(marker in key for marker in markers)}


# --- failed sign-ins, per account and per address ----------------------------------------


def test_failed_attempts_per_account_end_in_429_with_retry_after(app, email):
    client = client_from(app)
    for _ in range(3):
        response = attempt(client, email, "wrong password")
        assert response.status_code == 200
        assert "Incorrect email or password." in response.get_data(as_text=True)

    refused = attempt(client, email, PASSWORD)  # even the right password, now
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts" in BeautifulSoup(refused.data, "html.parser").get_text()
    assert client.get("/api/me").status_code == 401

    # The limit is the account's, from any address; other accounts are untouched.
    assert attempt(client_from(app), email, PASSWORD).status_code == 429


def test_counters_live_in_the_storage_rate_limit_storage_uri_names(app, email, storage_uri):
    attempt(client_from(app), email, "wrong password")
    keys = list(limit_counters(app, storage_uri, f"account:{email_digest(email)}/"))
    assert len(keys) == 1
    assert keys[0].endswith(tuple(f"/sign-in-account/3/15/minute{suffix}" for suffix in ("", "s")))
    if storage_uri == "memory://":
        assert type(sign_in_storage(app)).__name__ == "MemoryStorage"


def test_a_limit_hit_is_a_security_event_of_the_account(app, email):
    owner = client_from(app)
    assert attempt(owner, email, PASSWORD).status_code == 302

    attacker = client_from(app)
    attacker_ip = attacker.environ_base["REMOTE_ADDR"]
    for _ in range(3):
        attempt(attacker, email, "wrong password")
    for _ in range(3):
        assert attempt(attacker, email, "wrong password").status_code == 429
    events = rate_limited_events(app)
    # One event, not one per refused request: an attacker cannot flood the list.
    assert len(events) == 1

    # The owner, still signed in elsewhere, sees it with the attacker's address.
    row = BeautifulSoup(owner.get("/account/sessions").data, "html.parser").select_one("[data-event]")
    assert "Too many sign-in attempts" in row.get_text()
    assert attacker_ip in row.get_text()


def test_successful_sign_ins_never_count(app, email):
    client = client_from(app)
    for _ in range(6):
        assert attempt(client, email, PASSWORD).status_code == 302
        AuthActions(client).logout()
    # Two failures after six successes: still under the limit of three.
    for _ in range(2):
        assert attempt(client, email, "wrong password").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 302


def test_failed_attempts_per_ip_address_end_in_429(app):
    client = client_from(app)
    for n in range(5):
        # A different (unknown) email each time: only the address limit applies.
        assert attempt(client, f"nobody-{n}-{secrets.token_hex(3)}@example.com", "guess").status_code == 200
    assert attempt(client, f"nobody-{secrets.token_hex(3)}@example.com", "guess").status_code == 429
    # Another address is not affected.
    assert attempt(client_from(app), f"nobody-{secrets.token_hex(3)}@example.com", "guess").status_code == 200


def test_an_ipv6_client_is_one_address_per_64_block(app):
    # One subscriber gets a whole /64: counting each address apart would give it 2^64 budgets.
    site, subnet = f"2001:db8:{secrets.randbelow(0xFFFF):x}", secrets.randbelow(0xFFFE)
    for n in range(5):
        client = client_from(app, ip=f"{site}:{subnet:x}::{n + 1:x}")
        assert attempt(client, fresh_email(), "guess").status_code == 200
    assert attempt(client_from(app, ip=f"{site}:{subnet:x}:ffff::99"), fresh_email(), "guess").status_code == 429
    # The next /64 is somebody else.
    assert attempt(client_from(app, ip=f"{site}:{subnet + 1:x}::1"), fresh_email(), "guess").status_code == 200


def test_text_no_database_can_store_is_refused_before_anything_is_counted(app, caplog):
    # JSON can carry a lone surrogate; no stored email holds one, and drivers refuse it.
    client = client_from(app)
    for n in range(5):
        assert attempt(client, f"nobody-{n}-{secrets.token_hex(3)}@example.com", "guess").status_code == 200
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/api/auth/token",
            data=b'{"email": "\\ud800@example.com", "password": "guess", "client_name": "x"}',
            content_type="application/json",
        )
    # Malformed: a 400, even from an address at its limit, and no 500 from looking it up.
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    # Nothing went wrong with the limiter's storage, and nothing says it did.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text


def test_the_account_key_is_the_normalised_email(app, email):
    client = client_from(app)
    for variant in (email.upper(), f"  {email}  ", email.title()):
        assert attempt(client, variant, "wrong password").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 429


def test_a_form_error_that_checks_no_password_does_not_count(app, email):
    client = client_from(app)
    for _ in range(5):
        assert attempt(client, email, "").status_code == 200
    assert attempt(client, email, PASSWORD).status_code == 302


def test_the_form_and_the_token_endpoint_share_the_budgets(app, email):
    """Failures at POST /api/auth/token count against the same budget as the form, keyed
    by the normalised email in the JSON body."""
    api = client_from(app)
    for _ in range(2):
        assert token_attempt(api, email.upper(), "wrong password").status_code == 401
    assert attempt(client_from(app), email, "wrong password").status_code == 200
    refused = token_attempt(api, email, PASSWORD)
    assert refused.status_code == 429
    assert refused.json["error"] == "too_many_attempts" and "Retry-After" in refused.headers
    assert attempt(client_from(app), email, PASSWORD).status_code == 429


def test_csrf_failures_do_not_count(app, email):
    client = client_from(app)
    for _ in range(5):
        assert client.post("/auth/login", data={"email": email, "password": "wrong"}).status_code == 400
    assert attempt(client, email, PASSWORD).status_code == 302


# The window opens at the first failure and must still be open at the third attempt: a
# one-second window left little room for three sign-ins on a loaded machine.
WINDOW = 3


@pytest.mark.parametrize("limits", [{"LOGIN_LIMIT_PER_ACCOUNT": f"2 per {WINDOW} seconds"}])
def test_the_right_password_gets_in_after_the_window(app, email):
    client = client_from(app)
    for _ in range(2):
        attempt(client, email, "wrong password")
    refused = attempt(client, email, PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) <= WINDOW
    # The limits library keeps real time: the one short wait of the suite.
    time.sleep(WINDOW + 0.1)
    assert attempt(client, email, PASSWORD).status_code == 302
    assert client.get("/api/me").status_code == 200


@pytest.mark.parametrize(
    "app_config", [{"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0", "LOGIN_LIMIT_PER_ACCOUNT": "1 per 15 minutes"}]
)
def test_sign_in_fails_open_when_the_limit_storage_is_down(app, email, caplog):
    client = client_from(app)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert attempt(client, email, "wrong password").status_code == 200
        assert attempt(client, email, PASSWORD).status_code == 302
    assert client.get("/api/me").status_code == 200
    # Logged once, when the outage was first met (signing up, in the fixture), not per attempt.
    logged = caplog.get_records("setup") + caplog.records
    assert [record.levelname for record in logged if "rate limit storage unreachable" in record.getMessage()] == [
        "WARNING"
    ]


def test_guessing_the_current_password_of_a_hijacked_session_is_limited(app, email):
    browser = client_from(app)
    AuthActions(browser).login(email=email)
    # A thief holding the session, without the browser's device cookie.
    browser.delete_cookie("device")
    for _ in range(3):
        assert change_password(browser, "a wrong guess", "n" * 12).status_code == 200
    limited = change_password(browser, PASSWORD, "n" * 12)
    assert limited.status_code == 429
    # The guesses spent the account's sign-in budget, and the password did not change.
    assert attempt(client_from(app), email, PASSWORD).status_code == 429
    with app.app_context():
        from webapp import accounts

        assert accounts.check_credentials(db.session, email, PASSWORD, rounds=4) is not None


def test_probing_which_emails_have_accounts_through_registration_is_limited_per_address(app, email):
    prober = client_from(app)
    answers = [AuthActions(prober).register(email).status_code for _ in range(6)]
    # "Already exists" five times, then the address's budget of failures is spent.
    assert answers == [200, 200, 200, 200, 200, 429]


def test_parallel_failed_attempts_cannot_overshoot_the_limit(app, email):
    # 30 wrong passwords at once for an account allowed 3 failures: each attempt takes its
    # place in the budget before its password is checked, so exactly 3 are checked.
    barrier = threading.Barrier(30)
    address = random_ip()

    def attempt_in_parallel(_):
        api = client_from(app, ip=address)
        barrier.wait()
        return token_attempt(api, email, "a wrong guess").status_code

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(attempt_in_parallel, range(30)))
    assert answers.count(401) == 3
    assert answers.count(429) == 27


def test_successes_and_refusals_give_their_place_back(app, email):
    browser = client_from(app)
    for _ in range(5):  # more successes than the budget of 3 failures
        assert attempt(browser, email, PASSWORD).status_code == 302
        AuthActions(browser).logout()
    # From a browser that never signed in to the account (no device cookie).
    guesser = client_from(app)
    for _ in range(3):
        assert attempt(guesser, email, "a wrong guess").status_code == 200
    assert attempt(guesser, email, PASSWORD).status_code == 429


# --- F4: sign-in work is bounded per client, per account and per process -------------------


@pytest.mark.parametrize(
    ("name", "value", "default"),
    [
        ("SIGN_IN_ATTEMPTS_PER_IP", "lots", "30 per minute"),
        ("LOGIN_LIMIT_PER_DEVICE", "5 a day", "5 per 15 minutes"),
        ("NEW_SESSIONS_PER_USER_PER_HOUR", "0", 20),
        ("MAX_CONCURRENT_PASSWORD_CHECKS", "two", 2),
    ],
)
def test_the_settings_of_the_limits_are_checked_at_start(tmp_path, name, value, default):
    environ = {"APP_ENV": "testing", "SECRET_KEY": "s" * 40}
    assert load_config(environ, tmp_path)[name] == default
    with pytest.raises(ConfigError, match=name):
        load_config({**environ, name: value}, tmp_path)


class SignIns:
    """Successful attempts at one endpoint, one after another, signed out after each."""

    def __init__(self, endpoint: str, client, email: str):
        self.endpoint, self.client, self.email = endpoint, client, email
        self.password = PASSWORD  # the account's, as the password changes go back and forth

    def __call__(self) -> int:
        """One attempt; its status."""
        if self.endpoint == "token":
            return token_attempt(self.client, self.email, self.password).status_code
        if self.endpoint == "password":
            new = NEW_PASSWORD if self.password == PASSWORD else PASSWORD
            status = change_password(self.client, self.password, new).status_code
            if status == 302:
                self.password = new
            return status
        if self.endpoint == "login":
            status = attempt(self.client, self.email, self.password).status_code
        else:
            status = AuthActions(self.client).register(fresh_email()).status_code
        AuthActions(self.client).logout()
        return status


def copy_cookies(source, target) -> None:
    for cookie in ("access_token", "refresh_token"):
        target.set_cookie(cookie, source.get_cookie(cookie).value)


@pytest.mark.parametrize("limits", [{"SIGN_IN_ATTEMPTS_PER_IP": "3 per minute"}])
@pytest.mark.parametrize("endpoint", ["login", "token", "register", "password"])
def test_every_sign_in_attempt_counts_against_the_address_successes_too(app, email, endpoint):
    client = client_from(app)
    if endpoint == "password":
        # Signed in from another address: the changes are this address's only attempts.
        elsewhere = client_from(app)
        assert AuthActions(elsewhere).login(email=email).status_code == 302
        copy_cookies(elsewhere, client)
    sign_in = SignIns(endpoint, client, email)
    success = 200 if endpoint == "token" else 302
    # Three a minute from one address, each a success, and each a bcrypt check...
    assert [sign_in() for _ in range(3)] == [success] * 3
    # ...then the next is refused before its password is checked, right as it is.
    assert sign_in() == 429
    # Another address is not affected.
    assert attempt(client_from(app), email, sign_in.password).status_code == 302


@pytest.mark.parametrize("limits", [{"SIGN_IN_ATTEMPTS_PER_IP": "2 per minute"}])
def test_the_address_limit_answers_429_with_retry_after_and_no_event(app, email):
    client = client_from(app)
    for _ in range(2):
        assert token_attempt(client, email, PASSWORD).status_code == 200
    refused = token_attempt(client, email, PASSWORD)
    assert refused.status_code == 429
    assert refused.json["error"] == "too_many_attempts"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    # Signing in often is no attack on the account: nothing in its activity list.
    assert rate_limited_events(app) == []


@pytest.mark.parametrize("limits", [{"NEW_SESSIONS_PER_USER_PER_HOUR": "3"}])
def test_new_sessions_per_user_are_capped_per_hour(app, email, clock):
    # Registering made the first session, at 12:00; two more at 12:10 and 12:20.
    for _ in range(2):
        clock.advance(600)
        assert token_attempt(client_from(app), email, PASSWORD).status_code == 200
    clock.advance(600)  # 12:30
    # From every address, at both endpoints, the right password or a wrong one: 429 until
    # 13:00, when the session of 12:00 is an hour old.
    for refused in (
        attempt(client_from(app), email, PASSWORD),
        token_attempt(client_from(app), email, PASSWORD),
        token_attempt(client_from(app), email, "a wrong guess"),
    ):
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) == 30 * 60
    # The owner hears of it, once.
    assert [event.detail for event in rate_limited_events(app)] == ["too many new sign-ins in an hour"]

    clock.advance(30 * 60)
    # The refusals checked no password and spent none of the account's three failures.
    client = client_from(app)
    assert [attempt(client, email, "a wrong guess").status_code for _ in range(2)] == [200, 200]
    assert attempt(client, email, PASSWORD).status_code == 302


@pytest.mark.parametrize("limits", [{"NEW_SESSIONS_PER_USER_PER_HOUR": "2"}])
def test_signed_out_sessions_still_count_toward_the_cap(app, email):
    browser = client_from(app)
    assert attempt(browser, email, PASSWORD).status_code == 302
    AuthActions(browser).logout()
    assert attempt(browser, email, PASSWORD).status_code == 429


def test_counting_new_sessions_reads_an_index(app, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("the plan read here is SQLite's")
    with app.app_context():
        statement = ratelimit.recent_sessions(user_id=1, since=app.config["CLOCK"](), cap=20)
        compiled = statement.compile(dialect=db.engine.dialect)
        with db.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(None for _ in compiled.positiontup)
            ).all()
    plan = " | ".join(row[-1] for row in rows)
    # Only the sessions of this user active in the last hour: a few rows, however many
    # sessions the user had in the months before.
    assert "SEARCH sessions USING INDEX ix_sessions_user_id_last_active_at (user_id=? AND last_active_at>" in plan
    assert "SCAN" not in plan, plan


class ConcurrencyProbe:
    """Stands in for `passwords.verify_password`: slow, and it notes how many run at once."""

    def __init__(self, real, seconds: float):
        self.real, self.seconds = real, seconds
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.seconds)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


# Four sign-ins in flight at once take four places in the account's failure budget.
@pytest.mark.parametrize("limits", [{"MAX_CONCURRENT_PASSWORD_CHECKS": "1", "LOGIN_LIMIT_PER_ACCOUNT": "4 per hour"}])
def test_password_checks_run_at_most_n_at_once_and_beyond_it_503(app, email, monkeypatch):
    # Each check takes a second, twice as long as a request waits for a slot.
    probe = ConcurrencyProbe(passwords.verify_password, seconds=2 * ratelimit.PASSWORD_CHECK_WAIT)
    monkeypatch.setattr(passwords, "verify_password", probe)
    barrier = threading.Barrier(4)

    def sign_in_in_parallel(_):
        api = client_from(app)
        barrier.wait()
        return token_attempt(api, email, PASSWORD)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(sign_in_in_parallel, range(4)))
    assert probe.most == 1
    # The others were told to come back, not queued behind it.
    statuses = [answer.status_code for answer in answers]
    assert sorted(statuses) == [200, 503, 503, 503], statuses
    busy = answers[statuses.index(503)]
    assert busy.json["error"] == "temporarily_unavailable" and int(busy.headers["Retry-After"]) >= 1
    # A busy answer checked no password: none of the four places was kept as a failure.
    probe.seconds = 0
    guesser = client_from(app)
    assert [attempt(guesser, email, "a wrong guess").status_code for _ in range(5)] == [200] * 4 + [429]


@pytest.mark.parametrize("limits", [{"MAX_CONCURRENT_PASSWORD_CHECKS": "1"}])
@pytest.mark.parametrize("endpoint", ["login", "register", "password"])
def test_every_form_that_checks_a_password_waits_for_a_slot(app, email, endpoint):
    client = client_from(app)
    if endpoint == "password":
        AuthActions(client).login(email=email)
    sign_in = SignIns(endpoint, client, email)
    slots = app.extensions["sign_in_limits"].password_checks
    assert slots.try_slot()  # another request holds the only one
    started = time.monotonic()
    assert sign_in() == 503
    assert time.monotonic() - started < 3
    slots.release()
    assert sign_in() == 302


# --- F5: nobody can lock a user out ---------------------------------------------------------


@pytest.mark.parametrize("limits", [{"LOGIN_LIMIT_PER_DEVICE": "2 per 15 minutes"}])
def test_a_browser_that_signed_in_before_keeps_signing_in_while_the_account_is_limited(app, email):
    address = random_ip()  # the owner and the attacker share one address (a NAT, an office)
    owner = client_from(app, ip=address)
    assert attempt(owner, email, PASSWORD).status_code == 302
    AuthActions(owner).logout()

    attacker = client_from(app, ip=address)
    for _ in range(3):
        assert attempt(attacker, email, "a wrong guess").status_code == 200
    for _ in range(2):
        assert attempt(attacker, fresh_email(), "a wrong guess").status_code == 200
    # The account's budget and the address's are spent: refused for everybody else...
    assert attempt(attacker, email, PASSWORD).status_code == 429
    assert attempt(client_from(app), email, PASSWORD).status_code == 429
    # ...but not for the owner's browser, which mistypes once and then gets in.
    assert attempt(owner, email, "a typo").status_code == 200
    assert attempt(owner, email, PASSWORD).status_code == 302
    assert owner.get("/api/me").status_code == 200


def test_the_owner_can_change_the_password_while_the_account_is_limited(app, email):
    owner = client_from(app)
    assert attempt(owner, email, PASSWORD).status_code == 302
    for _ in range(3):
        attempt(client_from(app), email, "a wrong guess")
    assert attempt(client_from(app), email, PASSWORD).status_code == 429
    # Signed in, with the device cookie of that sign-in: a typo, then the change.
    assert change_password(owner, "a typo", NEW_PASSWORD).status_code == 200
    assert change_password(owner, PASSWORD, NEW_PASSWORD).status_code == 302


@pytest.mark.parametrize("limits", [{"LOGIN_LIMIT_PER_DEVICE": "2 per 15 minutes"}])
def test_a_device_cookie_has_a_small_failure_budget_of_its_own(app, email):
    browser = client_from(app)
    assert attempt(browser, email, PASSWORD).status_code == 302
    AuthActions(browser).logout()
    for _ in range(2):
        assert attempt(browser, email, "a wrong guess").status_code == 200
    refused = attempt(browser, email, PASSWORD)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    # Those failures were the device's: the account's three are whole for everybody else.
    other = client_from(app)
    assert [attempt(other, email, "a wrong guess").status_code for _ in range(3)] == [200, 200, 200]


def test_a_device_cookie_vouches_only_for_its_own_account_and_only_when_genuine(app, email):
    browser = client_from(app)
    assert attempt(browser, email, PASSWORD).status_code == 302
    AuthActions(browser).logout()
    genuine = browser.get_cookie("device").value

    victim = fresh_email()
    AuthActions(client_from(app)).register(victim)
    for _ in range(3):
        attempt(client_from(app), victim, "a wrong guess")
    # The cookie names another account: the victim's limit holds for this browser too.
    assert attempt(browser, victim, PASSWORD).status_code == 429
    nonce, _, mac = genuine.partition(".")
    for forged in (f"{nonce}.{mac[:-2]}AA", f"{secrets.token_urlsafe(16)}.{mac}", "junk", "." * 500):
        browser.set_cookie("device", forged)
        assert attempt(browser, victim, PASSWORD).status_code == 429
    # And it still works for its own account, whatever else was tried with it.
    browser.set_cookie("device", genuine)
    for _ in range(3):
        attempt(client_from(app), email, "a wrong guess")
    assert attempt(browser, email, PASSWORD).status_code == 302


@pytest.mark.parametrize(("limits", "name"), [({}, "device"), ({"COOKIE_SECURE": True}, "__Host-device")])
def test_the_device_cookie_is_httponly_strict_long_lived_and_names_no_email(app, limits, name):
    base_url = "https://localhost" if limits else "http://localhost"
    browser = client_from(app)
    token = csrf_token_from(browser.get("/auth/register", base_url=base_url).data)
    address = fresh_email()
    response = browser.post(
        "/auth/register",
        base_url=base_url,
        headers={"Referer": f"{base_url}/auth/register"},
        data={"email": address, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    header = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith(f"{name}="))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"] == "SameSite=Strict"
    assert attributes["path"] == "Path=/" and "domain" not in attributes
    assert ("secure" in attributes) is bool(limits)
    assert attributes["max-age"] == f"Max-Age={365 * 24 * 3600}"
    value = header.split(";")[0].split("=", 1)[1]
    assert address.split("@")[0] not in value and email_digest(address) not in value


def test_registering_with_an_existing_address_does_not_count_against_that_account(app, email):
    # From many addresses, more often than the account's budget of three failures.
    for _ in range(5):
        assert AuthActions(client_from(app)).register(email).status_code == 200
    assert attempt(client_from(app), email, PASSWORD).status_code == 302


@pytest.mark.parametrize("path", ["/auth/login", "/api/auth/token"])
def test_no_response_tells_anybody_the_budget_left(app, email, path):
    client = client_from(app)
    for password in ("a wrong guess", PASSWORD):
        if path == "/auth/login":
            response = attempt(client, email, password)
        else:
            response = token_attempt(client, email, password)
        assert response.status_code in (200, 302, 401)
        assert not [name for name in response.headers.keys() if name.lower().startswith("x-ratelimit")]


# --- F6: only well-formed attempts are counted, and one client makes few keys -------------


def test_malformed_attempts_touch_no_limit_storage(app, storage_uri):
    client = client_from(app)
    ip = client.environ_base["REMOTE_ADDR"]
    probes = [fresh_email() for _ in range(4)]
    token = csrf_token_from(client.get("/auth/login").data)
    statuses = []
    for probe in probes:
        for form in ({"email": probe}, {"email": probe, "password": "x" * 1001}, {"email": "x" * 321, "password": "p"}):
            statuses.append(client.post("/auth/login", data={**form, "csrf_token": token}).status_code)
        for form in (
            {"email": probe, "password": PASSWORD, "confirm": "something else"},
            {"email": "not an email", "password": PASSWORD, "confirm": PASSWORD},
            {"email": probe, "password": "short", "confirm": "short"},
        ):
            statuses.append(client.post("/auth/register", data={**form, "csrf_token": token}).status_code)
        for body in ({"email": probe}, {"email": probe, "password": 7}, {"email": probe, "password": "x" * 1001}):
            statuses.append(client.post("/api/auth/token", json=body).status_code)
        statuses.append(client.post("/api/auth/token", data="{not json", content_type="application/json").status_code)
        statuses.append(client.post("/api/auth/token", data={"email": probe, "password": "guess"}).status_code)
    assert limit_counters(app, storage_uri, ip, *[email_digest(probe) for probe in probes]) == {}
    assert set(statuses) <= {200, 400, 415}, statuses

    # Signed in (registering counts this address once), then malformed password changes.
    owner = fresh_email()
    assert AuthActions(client).register(owner).status_code == 302
    before = limit_counters(app, storage_uri, ip, email_digest(owner))
    page = csrf_token_from(client.get("/account/password").data)
    for form in ({"current_password": PASSWORD}, {"current_password": PASSWORD, "new_password": "n" * 9}):
        assert client.post("/account/password", data={**form, "csrf_token": page}).status_code == 200
    assert limit_counters(app, storage_uri, ip, email_digest(owner)) == before


@pytest.mark.parametrize(
    "limits", [{"SIGN_IN_ATTEMPTS_PER_IP": "10 per minute", "LOGIN_LIMIT_PER_IP": "1000 per minute"}]
)
def test_one_client_creates_a_bounded_number_of_keys(app, storage_uri):
    client = client_from(app)
    probes = [fresh_email() for _ in range(40)]
    statuses = [attempt(client, probe, "guess").status_code for probe in probes]
    assert statuses == [200] * 10 + [429] * 30
    assert len(limit_counters(app, storage_uri, *[email_digest(probe) for probe in probes])) == 10
    # What cannot be an email cannot be an account: no account key for it at all.
    other = client_from(app)
    not_emails = [f"not-an-email-{secrets.token_hex(3)}" for _ in range(5)]
    for not_email in not_emails:
        assert attempt(other, not_email, "guess").status_code == 200
    assert limit_counters(app, storage_uri, other.environ_base["REMOTE_ADDR"]) != {}
    assert limit_counters(app, storage_uri, *[email_digest(not_email) for not_email in not_emails]) == {}
