"""The app under test: its environment, its migrations, and gunicorn serving it on a free port."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from webapp.sessions import SessionPolicy
from webapp.tokens import KeyRing

ROOT = Path(__file__).resolve().parent.parent
# gunicorn and flask from the interpreter's own environment (the project's venv).
BIN = Path(sys.executable).parent
# Variables of the bench's own environment that must not reach the app: the bench sets
# its own database, secret and mode, and FLASK_* would change how `flask` finds the app.
_NOT_INHERITED = ("DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "APP_ENV")


def inherited_environ() -> dict[str, str]:
    """This process's environment minus what the bench decides for every server it starts
    (ours and the peers alike)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BENCH_", "FLASK_")) and key not in _NOT_INHERITED
    }


def bench_session_policy(secret: str) -> SessionPolicy:
    """The policy of a production deployment with the documented defaults. The bench hands
    every value to the server through its own setting (`AppUnderTest.environ`), so the
    tokens the bench mints and the server that checks them follow one policy."""
    return SessionPolicy(
        keys=KeyRing.from_secrets(secret),
        issuer="webapp",
        audience="webapp",
        access_ttl=900,
        refresh_ttl=7 * 24 * 3600,
        max_age=30 * 24 * 3600,
        reuse_grace=10,
        max_sessions_per_user=50,
    )


@dataclass(frozen=True)
class AppUnderTest:
    """One production configuration of the app over one SQLite database."""

    database: Path
    secret: str
    policy: SessionPolicy
    bcrypt_rounds: int

    @classmethod
    def create(cls, database: Path, *, bcrypt_rounds: int) -> AppUnderTest:
        """A configuration with a fresh random secret."""
        secret = secrets.token_urlsafe(48)
        return cls(database, secret, bench_session_policy(secret), bcrypt_rounds)

    def environ(self) -> dict[str, str]:
        """The environment gunicorn and `flask` run with: this process's, minus what the
        bench decides, plus the production settings and the policy's values."""
        policy = self.policy
        return {
            **inherited_environ(),
            "APP_ENV": "production",
            "SECRET_KEY": self.secret,
            "DATABASE_URL": f"sqlite:///{self.database}",
            "BCRYPT_ROUNDS": str(self.bcrypt_rounds),
            # Production's default, stated because cookie_name depends on it.
            "COOKIE_SECURE": "on",
            "JWT_ISSUER": policy.issuer,
            "JWT_AUDIENCE": policy.audience,
            "ACCESS_TOKEN_TTL": str(policy.access_ttl),
            "REFRESH_TOKEN_TTL": str(policy.refresh_ttl),
            "SESSION_MAX_AGE": str(policy.max_age),
            "REFRESH_REUSE_GRACE": str(policy.reuse_grace),
            "MAX_SESSIONS_PER_USER": str(policy.max_sessions_per_user),
            # Several workers on memory:// limits: looser limits do not matter to a bench,
            # and its sign-in loops would trip the limits on sign-in work (they have tests).
            "ALLOW_PER_PROCESS_LIMITS": "on",
            "SIGN_IN_ATTEMPTS_PER_IP": "1000000 per minute",
            "NEW_SESSIONS_PER_USER_PER_HOUR": "1000000",
            "PYTHONDONTWRITEBYTECODE": "1",
            # One proxy in front: the DBSC rows say "this came over HTTPS" with
            # X-Forwarded-Proto, as nginx would (bench/dbsc.py).
            "TRUSTED_PROXIES": "1",
        }

    def cookie_name(self, name: str) -> str:
        """A cookie's name as the app sets it: with COOKIE_SECURE on, `__Host-` names."""
        return f"__Host-{name}"

    def run_flask(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run the `flask` command on this configuration, capturing its output; the
        caller checks the exit status."""
        return subprocess.run(
            [str(BIN / "flask"), *arguments], cwd=ROOT, env=self.environ(), capture_output=True, text=True
        )


def migrate(app: AppUnderTest) -> None:
    """Create the schema with the migrations, as a deployment does. Raises SystemExit if they fail."""
    upgrade = app.run_flask("db", "upgrade")
    if upgrade.returncode != 0:
        raise SystemExit(f"flask db upgrade failed:\n{upgrade.stderr[-2000:]}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def cookies(self) -> dict[str, str]:
        """The cookies the reply sets, by name."""
        found = {}
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                found[key.strip()] = val.strip()
        return found


@dataclass(frozen=True)
class Server:
    """A running gunicorn: its port and its master process."""

    port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: str | None = None
    ) -> Reply:
        """One request on a connection of its own."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers have used so far. Unlike requests per
        second, it hardly moves when other processes compete for the cores."""
        total = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")


# What gunicorn serves unless told otherwise: our app, as `make run` serves it.
OUR_WSGI_TARGET = "wsgi:app"


@contextmanager
def serve(
    environ: Mapping[str, str],
    workers: int,
    *,
    target: str = OUR_WSGI_TARGET,
    ready_path: str = "/healthz",
) -> Iterator[Server]:
    """gunicorn serving the WSGI `target` (ours by default; a peer's `module:create_app()`)
    with `environ` and `workers` workers on a free port, once `ready_path` answers 200;
    stopped on the way out. Every app gets the same command from the project root, so
    gunicorn.conf.py's threaded workers serve ours and the peers alike, as `make run` does.
    Raises SystemExit if it does not start in 30 s."""
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), target],
        cwd=ROOT,
        env=dict(environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(port, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.request("GET", ready_path).status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stderr.read() if process.stderr else ""
                raise SystemExit(f"gunicorn ({target}) did not start:\n{output}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class FlaskSessionCookie:
    """The Flask session cookie (it holds the CSRF secret) as `name=value`, and its CSRF token."""

    pair: str
    csrf_token: str


def first_page_cookie(server: Server, app: AppUnderTest) -> FlaskSessionCookie:
    """The Flask session cookie and CSRF token a browser has after its first page: every
    line the bench sends carries it, so no page sets a new one."""
    reply = server.request("GET", "/auth/login")
    name = app.cookie_name("session")
    value = reply.cookies()[name]
    # The sign-in form's own token (pages of a signed-out visitor carry no meta tag).
    match = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', reply.body)
    if match is None:
        raise SystemExit("no CSRF token in the sign-in form: the bench cannot make its cookie")
    csrf_token = match[1].decode()
    return FlaskSessionCookie(f"{name}={value}", csrf_token)
