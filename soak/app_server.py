"""The app in its production shape: its environment, its migrations, and gunicorn serving
it over HTTPS on a free port of 127.0.0.1, with its metrics (`METRICS_TOKEN`: GET /metrics,
summed over the workers by gunicorn.conf.py's shared directory) and JSON log lines
(`LOG_FORMAT=json`, on gunicorn's standard error, which goes to the soak's log file)."""

from __future__ import annotations

import http.client
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .processes import children_of, free_port, start_group, stop_group
from .services import Certificates, ServiceError

ROOT = Path(__file__).resolve().parent.parent
# gunicorn and flask from the interpreter's own environment (the project's venv).
BIN = Path(sys.executable).parent
# Variables of the soak's own environment that must not reach the app: the soak decides
# them, and FLASK_* would change how `flask` finds the app.
# So do the metrics' and logs' settings: gunicorn.conf.py makes the metrics directory of
# this server's own only when none is given.
_NOT_INHERITED = (
    "DATABASE_URL",
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "APP_ENV",
    "RATELIMIT_STORAGE_URI",
    "METRICS_TOKEN",
    "LOG_FORMAT",
    "PROMETHEUS_MULTIPROC_DIR",
    "WEBAPP_METRICS_DIRECTORY_MADE_BY_GUNICORN",
)
# The app's defaults, stated because the soak's checks depend on them.
REFRESH_REUSE_GRACE = 10
REFRESH_TOKEN_TTL = 7 * 24 * 3600
SESSION_MAX_AGE = 30 * 24 * 3600


@dataclass(frozen=True)
class AppConfig:
    """One production configuration of the app."""

    database_url: str
    ratelimit_storage_uri: str
    secret: str
    access_token_ttl: int
    certificates: Certificates
    metrics_token: str  # what a scrape of GET /metrics must present

    @classmethod
    def create(
        cls, *, database_url: str, ratelimit_storage_uri: str, access_token_ttl: int, certificates: Certificates
    ) -> AppConfig:
        return cls(
            database_url,
            ratelimit_storage_uri,
            secrets.token_urlsafe(48),
            access_token_ttl,
            certificates,
            secrets.token_urlsafe(32),
        )

    def environ(self) -> dict[str, str]:
        """Production, as a deployment sets it, but for two sign-in limits (see below)."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SOAK_", "FLASK_", "BENCH_")) and key not in _NOT_INHERITED
        }
        return {
            **inherited,
            "APP_ENV": "production",
            "SECRET_KEY": self.secret,
            "DATABASE_URL": self.database_url,
            "RATELIMIT_STORAGE_URI": self.ratelimit_storage_uri,
            "ACCESS_TOKEN_TTL": str(self.access_token_ttl),
            "REFRESH_REUSE_GRACE": str(REFRESH_REUSE_GRACE),
            "REFRESH_TOKEN_TTL": str(REFRESH_TOKEN_TTL),
            "SESSION_MAX_AGE": str(SESSION_MAX_AGE),
            "COOKIE_SECURE": "on",
            "METRICS_TOKEN": self.metrics_token,
            "LOG_FORMAT": "json",
            # Every browser of the soak comes from 127.0.0.1, as if a whole office signed
            # in through one address: the per-address attempt limit (30 a minute, right
            # or wrong) would turn away the crowd's correct passwords, and a person who
            # signs out and in all soak long would reach the hourly new-session cap.
            # Both have tests of their own (tests/test_rate_limits.py); everything that
            # counts failures stays as in production.
            "SIGN_IN_ATTEMPTS_PER_IP": "1000000 per minute",
            "NEW_SESSIONS_PER_USER_PER_HOUR": "1000000",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run_flask(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flask"), *arguments],
            cwd=ROOT,
            env=self.environ(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )


def migrate(app: AppConfig) -> None:
    """Create the schema with the migrations, as a deployment does."""
    upgrade = app.run_flask("db", "upgrade")
    if upgrade.returncode != 0:
        raise ServiceError(f"flask db upgrade failed:\n{upgrade.stderr[-2000:]}")


@dataclass(frozen=True)
class Gunicorn:
    """A running gunicorn master, its port and its log."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ca_file: Path
    # The statuses of the soak's own /healthz requests (the app counts their answers too).
    health_checks: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return children_of(self.process.pid)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET `path` over HTTPS, checking the certificate as a browser does: status and body."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=context)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def healthz(self) -> int:
        status, _ = self.get("/healthz")
        self.health_checks.append(status)
        return status


@contextmanager
def serve(app: AppConfig, *, workers: int, log: Path) -> Iterator[Gunicorn]:
    """`gunicorn -w N` with the project's gunicorn.conf.py (threaded workers), over HTTPS
    with the throwaway certificate, once it answers /healthz; stopped on the way out."""
    port = free_port()
    process = start_group(
        [
            BIN / "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--certfile",
            app.certificates.cert_file,
            "--keyfile",
            app.certificates.key_file,
            "wsgi:app",
        ],
        cwd=ROOT,
        env=app.environ(),
        log=log,
    )
    server = Gunicorn(port, process, log, app.certificates.ca_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.healthz() == 200 and len(server.workers()) == workers:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"gunicorn did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        stop_group(process, timeout=20)
