"""Settings from the environment.

Every setting of the spec's table is read here and nowhere else. Secrets have no
fallback in production: `load_config` raises `ConfigError` and the app refuses to
start, saying which variable is missing.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import limits
from sqlalchemy.engine import make_url

APP_ENVS = ("development", "testing", "production")
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0, true/false, on/off (got {value!r})")


def parse_int(name: str, value: str, *, minimum: int = 0) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {value!r})") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {number})")
    return number


def parse_limit(name: str, value: str) -> str:
    """A rate string (`limits`), checked now: a typo must stop the start, not switch
    the sign-in limits off at request time."""
    try:
        limits.parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be a rate such as '10 per 15 minutes' (got {value!r})") from None
    return value


def parse_public_url(value: str | None) -> str | None:
    """`PUBLIC_URL`: an http(s) URL with a host and no query, kept without its trailing
    slash so that a path can be appended."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"PUBLIC_URL must be an http:// or https:// URL such as https://app.example.com (got {value!r})"
        )
    return value.strip().rstrip("/")


def make_private_directory(path: Path) -> None:
    """Create `path` with mode 0700, or take group and other bits off it if it is ours.

    The instance folder holds the development secret and the SQLite database. SQLite
    creates its files (the database, then `-wal` and `-shm`) 0644 less the umask, at
    first use, in whichever thread or process connects first: a umask of 077 would be
    process-wide and race with other threads, and a chmod afterwards would leave a window
    and miss the files SQLite (or a backup copy) makes later. A folder nobody else can
    enter protects every file in it, whoever creates it and whenever. A folder left 0755
    by an earlier version is tightened; one owned by another user is the operator's
    deliberate setup, and left alone.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) & 0o077:
        path.chmod(0o700)


def keeps_database_in(database_url: str, instance_path: Path) -> bool:
    """Whether the database is an SQLite file in the instance folder. Relative SQLite
    paths count: Flask-SQLAlchemy resolves them against the instance folder."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return False
    path = Path(url.database)
    return not path.is_absolute() or path.resolve().is_relative_to(instance_path.resolve())


def development_secret_key(instance_path: Path) -> str:
    """Read the development secret from `instance/`, creating it exactly once.

    Several gunicorn workers may start at the same moment: exclusive creation makes
    one of them write the key and the others read it.
    """
    path = instance_path / "secret_key"
    make_private_directory(instance_path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            # Another worker created the file and has not written it yet.
            time.sleep(0.01)
        raise ConfigError(f"{path} is empty: delete it and start again") from None
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def load_config(environ: Mapping[str, str], instance_path: Path) -> dict:
    """Build the Flask config mapping from environment variables."""

    def get(name: str, default: str | None = None) -> str | None:
        value = environ.get(name)
        return default if value is None or value.strip() == "" else value

    app_env = get("APP_ENV", "development").strip().lower()
    if app_env not in APP_ENVS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(APP_ENVS)} (got {app_env!r})")
    production = app_env == "production"

    secret_key = get("SECRET_KEY")
    if secret_key is None:
        if production:
            raise ConfigError(
                "SECRET_KEY is not set. In production it is required: set it to a long "
                "random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        secret_key = development_secret_key(instance_path)
    fallbacks = [key.strip() for key in (get("SECRET_KEY_FALLBACKS") or "").split(",") if key.strip()]

    database_url = get("DATABASE_URL") or f"sqlite:///{instance_path / 'webapp.sqlite3'}"

    cookie_secure = parse_bool("COOKIE_SECURE", get("COOKIE_SECURE", "on" if production else "off"))
    allow_insecure_cookies = parse_bool("ALLOW_INSECURE_COOKIES", get("ALLOW_INSECURE_COOKIES", "off"))
    if production and not cookie_secure and not allow_insecure_cookies:
        raise ConfigError(
            "COOKIE_SECURE is off in production: the sign-in cookies would travel over plain HTTP and lose "
            "their __Host- names, which keep other subdomains from planting cookies. Serve over HTTPS and "
            "leave COOKIE_SECURE on. Only to try production settings over plain HTTP on your own machine, "
            "set ALLOW_INSECURE_COOKIES=on as well."
        )
    samesite = get("COOKIE_SAMESITE", "Lax").strip().capitalize()
    if samesite not in ("Lax", "Strict"):
        raise ConfigError(f"COOKIE_SAMESITE must be Lax or Strict (got {samesite!r})")

    mail_server = get("MAIL_SERVER")
    public_url = parse_public_url(get("PUBLIC_URL"))
    if production and public_url is not None and not public_url.startswith("https://") and cookie_secure:
        raise ConfigError(
            f"PUBLIC_URL must start with https:// in production (got {public_url!r}): a password-reset link "
            "sent over plain HTTP can be read on the way."
        )
    if production and mail_server is not None and public_url is None:
        raise ConfigError(
            "PUBLIC_URL is not set. With MAIL_SERVER set in production it is required: links in emails are "
            "built from it (never from the request's Host header, which a client chooses), e.g. "
            "PUBLIC_URL=https://app.example.com"
        )

    log_format = get("LOG_FORMAT", "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json (got {log_format!r})")
    metrics_token = get("METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token.strip()) < 16:
        raise ConfigError(
            "METRICS_TOKEN must be at least 16 characters: whoever holds it reads the sign-in counts. "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )

    access_ttl = parse_int("ACCESS_TOKEN_TTL", get("ACCESS_TOKEN_TTL", "900"), minimum=1)
    refresh_ttl = parse_int("REFRESH_TOKEN_TTL", get("REFRESH_TOKEN_TTL", "604800"), minimum=1)
    max_age = parse_int("SESSION_MAX_AGE", get("SESSION_MAX_AGE", "2592000"), minimum=1)

    return {
        "APP_ENV": app_env,
        "TESTING": app_env == "testing",
        "SECRET_KEY": secret_key,
        # Flask 3.1 verifies its own session cookie with these too.
        "SECRET_KEY_FALLBACKS": fallbacks,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "ACCESS_TOKEN_TTL": access_ttl,
        "REFRESH_TOKEN_TTL": refresh_ttl,
        "SESSION_MAX_AGE": max_age,
        "REFRESH_REUSE_GRACE": parse_int("REFRESH_REUSE_GRACE", get("REFRESH_REUSE_GRACE", "10")),
        "COOKIE_SECURE": cookie_secure,
        "ALLOW_INSECURE_COOKIES": allow_insecure_cookies,
        "COOKIE_SAMESITE": samesite,
        "BCRYPT_ROUNDS": parse_int("BCRYPT_ROUNDS", get("BCRYPT_ROUNDS", "12"), minimum=4),
        "RATELIMIT_STORAGE_URI": get("RATELIMIT_STORAGE_URI", "memory://"),
        "LOGIN_LIMIT_PER_ACCOUNT": parse_limit(
            "LOGIN_LIMIT_PER_ACCOUNT", get("LOGIN_LIMIT_PER_ACCOUNT", "10 per 15 minutes")
        ),
        "LOGIN_LIMIT_PER_IP": parse_limit("LOGIN_LIMIT_PER_IP", get("LOGIN_LIMIT_PER_IP", "50 per 15 minutes")),
        "LOGIN_LIMIT_PER_DEVICE": parse_limit(
            "LOGIN_LIMIT_PER_DEVICE", get("LOGIN_LIMIT_PER_DEVICE", "5 per 15 minutes")
        ),
        "SIGN_IN_ATTEMPTS_PER_IP": parse_limit(
            "SIGN_IN_ATTEMPTS_PER_IP", get("SIGN_IN_ATTEMPTS_PER_IP", "30 per minute")
        ),
        "NEW_SESSIONS_PER_USER_PER_HOUR": parse_int(
            "NEW_SESSIONS_PER_USER_PER_HOUR", get("NEW_SESSIONS_PER_USER_PER_HOUR", "20"), minimum=1
        ),
        "MAX_CONCURRENT_PASSWORD_CHECKS": parse_int(
            "MAX_CONCURRENT_PASSWORD_CHECKS", get("MAX_CONCURRENT_PASSWORD_CHECKS", "2"), minimum=1
        ),
        "MAX_SESSIONS_PER_USER": parse_int("MAX_SESSIONS_PER_USER", get("MAX_SESSIONS_PER_USER", "50"), minimum=1),
        "TRUSTED_PROXIES": parse_int("TRUSTED_PROXIES", get("TRUSTED_PROXIES", "0")),
        "PRUNE_AFTER_DAYS": parse_int("PRUNE_AFTER_DAYS", get("PRUNE_AFTER_DAYS", "30")),
        "SECURITY_EVENT_RETENTION_DAYS": parse_int(
            "SECURITY_EVENT_RETENTION_DAYS", get("SECURITY_EVENT_RETENTION_DAYS", "90")
        ),
        # Flask-Mail's own settings. Sending is never suppressed: without MAIL_SERVER no
        # SMTP connection is made at all and each email goes to the log (webapp/mail.py).
        "MAIL_SERVER": mail_server,
        "MAIL_PORT": parse_int("MAIL_PORT", get("MAIL_PORT", "25"), minimum=1),
        "MAIL_USE_TLS": parse_bool("MAIL_USE_TLS", get("MAIL_USE_TLS", "off")),
        "MAIL_USERNAME": get("MAIL_USERNAME"),
        "MAIL_PASSWORD": get("MAIL_PASSWORD"),
        "MAIL_DEFAULT_SENDER": get("MAIL_DEFAULT_SENDER", "no-reply@localhost"),
        "MAIL_SUPPRESS_SEND": False,
        "PUBLIC_URL": public_url,
        "PASSWORD_RESET_TTL": parse_int("PASSWORD_RESET_TTL", get("PASSWORD_RESET_TTL", "3600"), minimum=60),
        "PASSWORD_RESET_EMAILS_PER_ADDRESS": parse_limit(
            "PASSWORD_RESET_EMAILS_PER_ADDRESS", get("PASSWORD_RESET_EMAILS_PER_ADDRESS", "3 per hour")
        ),
        # Where `make run` serves: the base of a link `flask users reset-link` prints when
        # PUBLIC_URL is not set (development only).
        "DEVICE_BOUND_SESSIONS": parse_bool("DEVICE_BOUND_SESSIONS", get("DEVICE_BOUND_SESSIONS", "on")),
        "HOST": get("HOST", "127.0.0.1"),
        "PORT": parse_int("PORT", get("PORT", "5000"), minimum=1),
        "JWT_ISSUER": get("JWT_ISSUER", "webapp"),
        "JWT_AUDIENCE": get("JWT_AUDIENCE", "webapp"),
        "LOG_FORMAT": log_format,
        # GET /metrics answers only with this bearer token (webapp/metrics.py); unset, 404.
        "METRICS_TOKEN": None if metrics_token is None else metrics_token.strip(),
    }


def engine_options(database_url: str) -> dict:
    """SQLAlchemy engine options for a database URL.

    For a database server: pre-ping replaces pooled connections that a server restart or
    failover closed, so the first request after an outage succeeds instead of failing
    once per dead connection; the connect timeout turns an unreachable host into a quick
    503 rather than a hung worker.
    """
    # Errors and logs never show statement parameters: they carry emails and hashes.
    if make_url(database_url).get_backend_name() != "postgresql":
        return {"hide_parameters": True}
    return {"hide_parameters": True, "pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}


def apply_derived_settings(config: dict) -> None:
    """Settings that follow from others, applied after test overrides."""
    secure = config["COOKIE_SECURE"]
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(config["SQLALCHEMY_DATABASE_URI"]))
    config.update(
        # Flask's own cookie carries the CSRF secret: same flags as the auth cookies.
        SESSION_COOKIE_NAME="__Host-session" if secure else "session",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE=config["COOKIE_SAMESITE"],
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        # Forms here are tiny; anything bigger is an attack or a mistake.
        MAX_CONTENT_LENGTH=config.get("MAX_CONTENT_LENGTH") or 64 * 1024,
        # A Redis that stops answering must cost a sign-in a second, not a hung worker;
        # the sign-in limits then fail open (auth/ratelimit.py).
        RATELIMIT_STORAGE_OPTIONS=config.get("RATELIMIT_STORAGE_OPTIONS")
        or (
            {"socket_connect_timeout": 1, "socket_timeout": 1}
            if config["RATELIMIT_STORAGE_URI"].startswith(("redis", "rediss"))
            else {}
        ),
    )
