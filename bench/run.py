"""`make bench`: what immediate revocation and rotation cost, measured side by side.

Serves the app with gunicorn on 127.0.0.1 (free ports) on fresh SQLite databases in a
temporary directory, with the production settings (`APP_ENV=production`, a random
`SECRET_KEY`, `BCRYPT_ROUNDS` as configured, 12 by default), and measures four ratios.
Every ratio is measured in rounds that alternate A B A B on the same machine in the same
minute, so a noisy neighbour slows both sides alike; we print the median of the
per-round ratios with their min and max.

1. `/account` with a valid access cookie over `/` signed out (throughput, wrk).
2. `/account` with an expired access cookie and a fresh refresh cookie (the request
   rotates) over `/account` with a valid access cookie (cost per request, wrk).
3. Median latency of `POST /auth/refresh` (one rotation, no page) with 1,000,000 more
   sessions in the table over the same with 1,000 (wrk, one connection); then the time
   `flask prune` takes to delete those 1,000,000 expired rows and the longest sign-in
   meanwhile.
4. Median `POST /auth/login` latency (wrk, one connection) over one bcrypt check at the
   configured cost, timed in this process.

Fresh refresh tokens without a browser: a refresh token is a pure function of (session,
counter) and the secret, so this script creates sessions directly in the database
(counter 0), and writes for wrk one cookie line per request in the order
session 1..N at counter c, then session 1..N at counter c+1, and so on. Each request
presents the session's current counter, a session is never in flight twice (N is far
above the number of connections), and before every round the counters are read back from
the database so a round cut short by wrk's timer loses nothing. wrk's Lua script never
wraps around (bench/lines.lua), and the round fails loudly if it ran out of lines.

Settings: BENCH_ROUNDS (5), BENCH_SECONDS (3), BENCH_WORKERS (gunicorn workers, 2),
BENCH_CONNECTIONS (4), BENCH_SCALE_ROWS (1000000), BENCH_WRITE (1: write
bench/results.md and the README table).
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from webapp import create_app, passwords, tokens  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import Session, User  # noqa: E402

BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "lines.lua"
RESULTS = ROOT / "bench" / "results.md"
README = ROOT / "README.md"
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SCALE_ROUNDS = 2 * ROUNDS + 1
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
SCALE_ROWS = int(os.environ.get("BENCH_SCALE_ROWS", "1000000"))
SMALL_ROWS = 1000
# For working on one part: BENCH_ONLY=pages, sign_in or scale (implies BENCH_WRITE=0).
ONLY = os.environ.get("BENCH_ONLY", "")
WRITE = not ONLY and os.environ.get("BENCH_WRITE", "1") not in ("0", "false", "off", "no")
BCRYPT_ROUNDS = int(os.environ.get("BCRYPT_ROUNDS", "12"))
PASSWORD = "correct horse battery staple"
# More than any request rate this app reaches here: lines for wrk never run out.
MAX_RPS = 4000

TARGETS = {
    "signed_in": (">=", 0.90),
    "rotation": ("<=", 1.5),
    "scale": ("<=", 1.15),
    "sign_in": ("<=", 1.10),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_environ(database: Path, secret: str) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BENCH_", "FLASK_")) and key not in ("DATABASE_URL", "SECRET_KEY", "APP_ENV")
    }
    environ.update(
        APP_ENV="production",
        SECRET_KEY=secret,
        DATABASE_URL=f"sqlite:///{database}",
        BCRYPT_ROUNDS=str(BCRYPT_ROUNDS),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return environ


def migrate(environ: dict[str, str]) -> None:
    subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env=environ, check=True, capture_output=True)


@dataclass
class Server:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers have used so far. Unlike requests per
        second, it hardly moves when other processes compete for the cores."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(environ: dict[str, str], workers: int):
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_request(port, "GET", "/healthz").status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start:\n{process.stderr.read() if process.stderr else ''}")
            time.sleep(0.1)
        yield Server(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def cookies(self) -> dict[str, str]:
        found = {}
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                found[key.strip()] = val.strip()
        return found


def http_request(port: int, method: str, path: str, *, headers: dict | None = None, body: str | None = None) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


# --- wrk --------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing it with apt-get (Debian's wrk package)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
        if not found:
            subprocess.run(["apt-get", "update", "-q"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
            found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "make bench needs wrk: install it with `sudo apt-get install wrk` (Debian/Ubuntu) and run again"
        )
    return found


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    overflow: int
    cpu_ms: float = float("nan")  # worker CPU per request

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    lines: list[str],
    workdir: Path,
    *,
    connections: int,
    seconds: int,
    method: str = "GET",
    headers: str = "",
    cycle: bool = False,
    server: Server | None = None,
) -> WrkResult:
    lines_file = workdir / f"lines-{secrets.token_hex(4)}.txt"
    lines_file.write_text("\n".join(lines) + "\n")
    environ = dict(
        os.environ,
        BENCH_LINES=str(lines_file),
        BENCH_METHOD=method,
        BENCH_HEADERS=headers,
        BENCH_CYCLE="1" if cycle else "0",
    )
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(
        [WRK, "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "30s", "-s", str(LUA), url],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = server.cpu_seconds() - cpu_before if server else float("nan")
    lines_file.unlink()
    report = next((line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if report is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    data = json.loads(report.removeprefix("BENCH_JSON "))
    errors = sum(data[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    if errors:
        detail = {
            key: data[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        }
        print(f"  wrk errors at {url}: {detail}", file=sys.stderr)
    if data["overflow"]:
        raise SystemExit(f"wrk ran out of fresh tokens ({data['overflow']} requests without): raise MAX_RPS")
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["latency_p50_us"] / 1000,
        p99_ms=data["latency_p99_us"] / 1000,
        max_ms=data["latency_max_us"] / 1000,
        errors=errors,
        overflow=data["overflow"],
        cpu_ms=cpu * 1000 / max(1, data["requests"]),
    )


# --- the database -----------------------------------------------------------------------


def sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Pool:
    """Sessions created directly in the database, and what a browser would hold for them."""

    public_ids: list[str]
    user_id: int
    cookie_prefix: str = ""  # the Flask session cookie every line also carries
    csrf: str = ""  # its CSRF token, for POSTs
    valid_access: dict[str, str] = field(default_factory=dict)
    expired_access: dict[str, str] = field(default_factory=dict)


class Bench:
    def __init__(self, workdir: Path, database: Path):
        self.workdir = workdir
        self.database = database
        self.secret = secrets.token_urlsafe(48)
        self.environ = app_environ(database, self.secret)
        self.app = create_app(environ=self.environ)
        self.policy = self.app.extensions["session_policy"]
        self.secure = self.app.config["COOKIE_SECURE"]

    def cookie_name(self, name: str) -> str:
        return f"__Host-{name}" if self.secure else name

    def create_users(self, emails: list[str], password_hash: str) -> list[int]:
        now = datetime.now(timezone.utc)
        with self.app.app_context():
            db.session.execute(
                insert(User), [{"email": email, "password_hash": password_hash, "created_at": now} for email in emails]
            )
            db.session.commit()
            ids = dict(db.session.execute(select(User.email, User.id).where(User.email.in_(emails))).all())
            db.engine.dispose()
        return [ids[email] for email in emails]

    def create_sessions(self, user_id: int, count: int) -> Pool:
        """`count` live sessions at counter 0, as a sign-in would have made them."""
        now = datetime.now(timezone.utc)
        public_ids = [secrets.token_urlsafe(16) for _ in range(count)]
        rows = [
            {
                "public_id": public_id,
                "user_id": user_id,
                "counter": 0,
                "created_at": now,
                "rotated_at": now,
                "last_active_at": now,
                "expires_at": now + timedelta(seconds=self.policy.max_age),
                "idle_expires_at": now + timedelta(seconds=self.policy.refresh_ttl),
                "persistent": False,
                "user_agent": "wrk",
                "ip_address": "127.0.0.1",
            }
            for public_id in public_ids
        ]
        with self.app.app_context():
            db.session.execute(insert(Session), rows)
            db.session.commit()
            db.engine.dispose()
        pool = Pool(public_ids, user_id)
        issued = int(now.timestamp())
        for public_id in public_ids:
            common = dict(
                user_id=user_id,
                session_id=public_id,
                keys=self.policy.keys,
                issuer=self.policy.issuer,
                audience=self.policy.audience,
            )
            pool.valid_access[public_id] = tokens.encode_access_token(
                issued_at=issued, expires_at=issued + 3600, **common
            )
            pool.expired_access[public_id] = tokens.encode_access_token(
                issued_at=issued - 7200, expires_at=issued - 3600, **common
            )
        return pool

    def count_sessions(self) -> int:
        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT count(*) FROM sessions").fetchone()[0]

    def counters(self, pool: Pool, database: Path | None = None) -> dict[str, int]:
        with sqlite3.connect(database or self.database) as connection:
            rows = connection.execute(
                "SELECT public_id, counter, revoked_at FROM sessions WHERE user_id = ?", (pool.user_id,)
            ).fetchall()
        revoked = [public_id for public_id, _, revoked_at in rows if revoked_at is not None]
        if revoked:
            raise SystemExit(f"{len(revoked)} bench sessions were revoked: the rotation lines are wrong")
        return {public_id: counter for public_id, counter, _ in rows}

    def rotation_lines(
        self, pool: Pool, *, with_expired_access: bool, seconds: float, database: Path | None = None
    ) -> list[str]:
        counters = self.counters(pool, database)
        passes = int(MAX_RPS * seconds / len(pool.public_ids)) + 2
        refresh_name, access_name = self.cookie_name("refresh_token"), self.cookie_name("access_token")
        lines = []
        for step in range(passes):
            for public_id in pool.public_ids:
                refresh = tokens.mint_refresh_token(public_id, counters[public_id] + step, keys=self.policy.keys)
                parts = [pool.cookie_prefix] if pool.cookie_prefix else []
                if with_expired_access:
                    parts.append(f"{access_name}={pool.expired_access[public_id]}")
                parts.append(f"{refresh_name}={refresh}")
                lines.append("; ".join(parts))
        return lines

    def access_lines(self, pool: Pool) -> list[str]:
        access_name = self.cookie_name("access_token")
        prefix = f"{pool.cookie_prefix}; " if pool.cookie_prefix else ""
        return [f"{prefix}{access_name}={pool.valid_access[public_id]}" for public_id in pool.public_ids]


def bulk_expired_sessions(database: Path, rows: int, users: int, password_hash: str) -> float:
    """Insert `rows` sessions that lapsed 60 days ago (what `flask prune` removes), spread
    over `users` users, with one INSERT ... SELECT over a recursive CTE. Returns seconds."""
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    long_ago, lapsed = sqlite_time(now - timedelta(days=90)), sqlite_time(now - timedelta(days=60))
    connection = sqlite3.connect(database)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(
            """
            INSERT INTO users (email, password_hash, created_at)
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
            SELECT 'filler-' || n || '@example.com', ?, ? FROM seq
            """,
            (users, password_hash, long_ago),
        )
        first_user = connection.execute("SELECT min(id) FROM users WHERE email LIKE 'filler-%'").fetchone()[0]
        connection.execute(
            """
            INSERT INTO sessions (public_id, user_id, counter, created_at, rotated_at, last_active_at, expires_at,
                                  idle_expires_at, revoked_at, persistent, user_agent, ip_address)
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
            SELECT printf('x%021d', n), ? + n % ?, 3, ?, ?, ?, ?, ?, NULL, 0, 'filler', '127.0.0.1' FROM seq
            """,
            (rows, first_user, users, long_ago, long_ago, long_ago, lapsed, lapsed),
        )
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return time.perf_counter() - started


# --- measurements -----------------------------------------------------------------------


def browser_session_cookie(port: int, bench: Bench) -> tuple[str, str]:
    """A Flask session cookie (it holds the CSRF secret) and its CSRF token, as a browser
    has them after its first page: every line sends it, so no page sets a new one."""
    reply = http_request(port, "GET", "/auth/login")
    name = "__Host-session" if bench.secure else "session"
    value = reply.cookies()[name]
    marker = b'<meta name="csrf-token" content="'
    start = reply.body.index(marker) + len(marker)
    csrf = reply.body[start : reply.body.index(b'"', start)].decode()
    return f"{name}={value}", csrf


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench self-check failed: {message}")


def ratio_summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def measure_pages(server: Server, bench: Bench, signed: Pool, rotating: Pool) -> dict:
    """Rounds of three wrk runs: anonymous `/`, signed-in `/account`, rotating `/account`."""
    anonymous_line = [signed.cookie_prefix]
    sizes = {}
    # Prove each side is what it claims before timing it.
    reply = http_request(server.port, "GET", "/", headers={"Cookie": signed.cookie_prefix})
    check(reply.status == 200 and b"Sign in" in reply.body and not reply.cookies(), f"anonymous / gave {reply.status}")
    sizes["/ (signed out)"] = len(reply.body)
    reply = http_request(server.port, "GET", "/account", headers={"Cookie": bench.access_lines(signed)[0]})
    check(reply.status == 200 and not reply.cookies(), f"signed-in /account gave {reply.status}")
    sizes["/account (signed in)"] = len(reply.body)
    reply = http_request(
        server.port,
        "GET",
        "/account",
        headers={"Cookie": bench.rotation_lines(rotating, with_expired_access=True, seconds=0)[0]},
    )
    check(
        reply.status == 200 and len(reply.cookies()) == 2,
        f"rotating /account gave {reply.status} {reply.cookies().keys()}",
    )
    sizes["/account (rotating)"] = len(reply.body)

    signed_root = [line for line in bench.access_lines(signed)]
    reply = http_request(server.port, "GET", "/", headers={"Cookie": signed_root[0]})
    check(
        reply.status == 200 and b"Signed in as" in reply.body and not reply.cookies(),
        f"signed-in / gave {reply.status}",
    )
    sizes["/ (signed in)"] = len(reply.body)

    def run_anonymous():
        return wrk(
            server.url + "/",
            anonymous_line,
            bench.workdir,
            connections=CONNECTIONS,
            seconds=SECONDS,
            cycle=True,
            server=server,
        )

    def run_signed_in():
        return wrk(
            server.url + "/account",
            bench.access_lines(signed),
            bench.workdir,
            connections=CONNECTIONS,
            seconds=SECONDS,
            cycle=True,
            server=server,
        )

    def run_signed_in_root():
        return wrk(
            server.url + "/",
            signed_root,
            bench.workdir,
            connections=CONNECTIONS,
            seconds=SECONDS,
            cycle=True,
            server=server,
        )

    def run_rotating():
        before = sum(bench.counters(rotating).values())
        lines = bench.rotation_lines(rotating, with_expired_access=True, seconds=SECONDS)
        result = wrk(
            server.url + "/account", lines, bench.workdir, connections=CONNECTIONS, seconds=SECONDS, server=server
        )
        rotated = sum(bench.counters(rotating).values()) - before
        # wrk stops counting at its deadline; a request or two in flight may still rotate.
        check(
            abs(rotated - result.requests) <= CONNECTIONS,
            f"{result.requests} rotating requests but {rotated} rotations",
        )
        return result

    sides = {
        "anonymous": run_anonymous,
        "signed_in": run_signed_in,
        "signed_in_root": run_signed_in_root,
        "rotating": run_rotating,
    }
    runs = {name: [] for name in sides}
    for round_number in range(ROUNDS):
        # A B C D, then D C B A: a drift in the machine's load hits every side alike.
        order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
        for name in order:
            runs[name].append(sides[name]())
        log(
            f"  round {round_number + 1}: / {runs['anonymous'][-1].rps:.0f} rps, /account {runs['signed_in'][-1].rps:.0f} rps, "
            f"/ signed in {runs['signed_in_root'][-1].rps:.0f} rps, rotating {runs['rotating'][-1].rps:.0f} rps; worker CPU per request "
            + ", ".join(f"{runs[name][-1].cpu_ms:.2f}" for name in sides)
            + " ms"
        )
    for name, results in runs.items():
        check(all(result.errors == 0 for result in results), f"{name}: wrk saw errors")
    signed_ratio = [s.rps / a.rps for s, a in zip(runs["signed_in"], runs["anonymous"])]
    rotation_ratio = [s.rps / r.rps for s, r in zip(runs["signed_in"], runs["rotating"])]
    same_page_ratio = [s.rps / a.rps for s, a in zip(runs["signed_in_root"], runs["anonymous"])]
    return {
        "cpu_ms": {name: [result.cpu_ms for result in results] for name, results in runs.items()},
        "cpu_signed_in": ratio_summary([a.cpu_ms / s.cpu_ms for s, a in zip(runs["signed_in"], runs["anonymous"])]),
        "cpu_same_page": ratio_summary(
            [a.cpu_ms / s.cpu_ms for s, a in zip(runs["signed_in_root"], runs["anonymous"])]
        ),
        "cpu_rotation": ratio_summary([r.cpu_ms / s.cpu_ms for s, r in zip(runs["signed_in"], runs["rotating"])]),
        "same_page": ratio_summary(same_page_ratio),
        "sizes": sizes,
        "rps": {name: [result.rps for result in results] for name, results in runs.items()},
        "signed_in": ratio_summary(signed_ratio),
        "rotation": ratio_summary(rotation_ratio),
    }


def measure_sign_in(server: Server, bench: Bench, users: list[str], password_hash: str) -> dict:
    """Rounds of: wrk signing in over one connection, then bcrypt checks in this process."""
    session_cookie, csrf = browser_session_cookie(server.port, bench)
    lines = [
        f"{session_cookie}\t" + urllib.parse.urlencode({"csrf_token": csrf, "email": email, "password": PASSWORD})
        for email in users
    ]
    reply = http_request(
        server.port,
        "POST",
        "/auth/login",
        headers={"Cookie": session_cookie, "Content-Type": "application/x-www-form-urlencoded"},
        body=lines[0].split("\t")[1],
    )
    check(reply.status == 302 and bench.cookie_name("access_token") in reply.cookies(), f"sign-in gave {reply.status}")
    sign_in_ms, bcrypt_ms, ratios, bcrypt_cpu_ms, sign_in_cpu_ms = [], [], [], [], []
    seconds = max(SECONDS, 3)

    def bcrypt_checks() -> float:
        """One bcrypt check after another for as long as a wrk run lasts (at least 3)."""
        checks = []
        deadline = time.perf_counter() + seconds
        cpu_started = time.process_time()
        while len(checks) < 3 or time.perf_counter() < deadline:
            started = time.perf_counter()
            check(passwords.verify_password(PASSWORD, password_hash), "bcrypt check failed")
            checks.append((time.perf_counter() - started) * 1000)
        bcrypt_cpu_ms.append((time.process_time() - cpu_started) * 1000 / len(checks))
        return statistics.median(checks)

    for round_number in range(ROUNDS):
        # wrk then bcrypt, then bcrypt then wrk: a drift in the machine's load hits both.
        if round_number % 2:
            bcrypt_ms.append(bcrypt_checks())
        # CPU per sign-in over the sign-ins the server finished (sessions it created),
        # once the one wrk left in flight is done: with a few requests per round, the
        # in-flight one would skew a per-request figure by wrk's count.
        sessions_before, cpu_before = bench.count_sessions(), server.cpu_seconds()
        result = wrk(
            server.url + "/auth/login", lines, bench.workdir, connections=1, seconds=seconds, method="POST", cycle=True
        )
        time.sleep(2)
        signed_in = bench.count_sessions() - sessions_before
        result.cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(1, signed_in)
        check(
            result.errors == 0 and result.requests >= 3 and signed_in >= result.requests,
            f"sign-in round: {result}, {signed_in} sessions",
        )
        if round_number % 2 == 0:
            bcrypt_ms.append(bcrypt_checks())
        sign_in_ms.append(result.p50_ms)
        sign_in_cpu_ms.append(result.cpu_ms)
        ratios.append(result.p50_ms / bcrypt_ms[-1])
        log(f"  round {round_number + 1}: sign-in p50 {result.p50_ms:.1f} ms, bcrypt {bcrypt_ms[-1]:.1f} ms")
    return {
        "sign_in_ms": sign_in_ms,
        "bcrypt_ms": bcrypt_ms,
        "sign_in": ratio_summary(ratios),
        "cpu_sign_in": ratio_summary([s / b for s, b in zip(sign_in_cpu_ms, bcrypt_cpu_ms)]),
    }


def measure_scale(bench_small: Bench, bench_large: Bench, pools: dict, filler_seconds: float) -> dict:
    """Rounds of wrk on POST /auth/refresh over one connection: small table, large table."""
    results = {"small": [], "large": []}
    with ExitStack() as stack:
        servers = {
            "small": stack.enter_context(serve(bench_small.environ, 1)),
            "large": stack.enter_context(serve(bench_large.environ, 1)),
        }
        benches = {"small": bench_small, "large": bench_large}
        for name, server in servers.items():
            session_cookie, csrf = browser_session_cookie(server.port, benches[name])
            pools[name].cookie_prefix = session_cookie
            pools[name].csrf = csrf
            line = benches[name].rotation_lines(pools[name], with_expired_access=False, seconds=0)[0]
            reply = http_request(server.port, "POST", "/auth/refresh", headers={"Cookie": line, "X-CSRFToken": csrf})
            check(reply.status == 204 and len(reply.cookies()) == 2, f"{name}: /auth/refresh gave {reply.status}")
        # Latency medians over one connection are noisier than throughput, and these
        # rounds are cheap: twice as many.
        for round_number in range(SCALE_ROUNDS):
            for name in ("small", "large") if round_number % 2 == 0 else ("large", "small"):
                lines = benches[name].rotation_lines(pools[name], with_expired_access=False, seconds=SECONDS)
                result = wrk(
                    servers[name].url + "/auth/refresh",
                    lines,
                    bench_small.workdir,
                    connections=1,
                    seconds=SECONDS,
                    method="POST",
                    headers=f"X-CSRFToken: {pools[name].csrf}",
                    server=servers[name],
                )
                check(result.errors == 0, f"{name} rotation: wrk saw errors")
                results[name].append(result)
            log(
                f"  round {round_number + 1}: p50 {results['small'][-1].p50_ms:.2f} ms at {SMALL_ROWS:,} sessions, {results['large'][-1].p50_ms:.2f} ms at {SCALE_ROWS + SMALL_ROWS:,}"
            )
    ratios = [large.p50_ms / small.p50_ms for small, large in zip(results["small"], results["large"])]
    return {
        "small_p50_ms": [r.p50_ms for r in results["small"]],
        "large_p50_ms": [r.p50_ms for r in results["large"]],
        "scale": ratio_summary(ratios),
        "cpu_scale": ratio_summary(
            [large.cpu_ms / small.cpu_ms for small, large in zip(results["small"], results["large"])]
        ),
        "filler_seconds": filler_seconds,
    }


def measure_prune(bench: Bench, users: list[str]) -> dict:
    """`flask prune` on the large database while one client signs in again and again."""
    has_prune = (
        subprocess.run(
            [str(BIN / "flask"), "prune", "--help"], cwd=ROOT, env=bench.environ, capture_output=True
        ).returncode
        == 0
    )
    if not has_prune:
        return {"pending": "`flask prune` does not exist yet (issue 3)"}
    with serve(bench.environ, 1) as server:
        session_cookie, csrf = browser_session_cookie(server.port, bench)
        waits: list[tuple[float, int]] = []
        stop = threading.Event()

        def sign_in_loop() -> None:
            index = 0
            while not stop.is_set():
                body = urllib.parse.urlencode(
                    {"csrf_token": csrf, "email": users[index % len(users)], "password": PASSWORD}
                )
                index += 1
                started = time.perf_counter()
                reply = http_request(
                    server.port,
                    "POST",
                    "/auth/login",
                    headers={"Cookie": session_cookie, "Content-Type": "application/x-www-form-urlencoded"},
                    body=body,
                )
                waits.append(((time.perf_counter() - started) * 1000, reply.status))

        # A baseline of sign-ins with the table idle, then the same during prune.
        baseline_thread = threading.Thread(target=sign_in_loop)
        baseline_thread.start()
        time.sleep(max(SECONDS, 3.0))
        stop.set()
        baseline_thread.join()
        baseline = list(waits)
        waits.clear()
        stop.clear()
        filler = "SELECT count(*) FROM sessions WHERE user_agent = 'filler'"
        with sqlite3.connect(bench.database) as connection:
            before = connection.execute(filler).fetchone()[0]
        thread = threading.Thread(target=sign_in_loop)
        thread.start()
        started = time.perf_counter()
        out = subprocess.run([str(BIN / "flask"), "prune"], cwd=ROOT, env=bench.environ, capture_output=True, text=True)
        prune_seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        with sqlite3.connect(bench.database) as connection:
            after = connection.execute(filler).fetchone()[0]
    check(out.returncode == 0, f"flask prune failed: {out.stderr[-2000:]}")
    return {
        "prune_seconds": prune_seconds,
        # The first sign-in of each worker prunes one small batch on its own (webapp/pruning.py).
        "expired_before": before,
        "deleted": before - after,
        "output": out.stdout.strip(),
        "sign_ins": len(waits),
        "max_sign_in_ms": max(ms for ms, _ in waits) if waits else None,
        "median_sign_in_ms": statistics.median(ms for ms, _ in waits) if waits else None,
        "failed_sign_ins": sum(1 for _, status in waits if status != 302),
        "baseline_median_ms": statistics.median(ms for ms, _ in baseline),
        "baseline_max_ms": max(ms for ms, _ in baseline),
    }


# --- report -----------------------------------------------------------------------------


def verdict(key: str, value: float) -> str:
    op, target = TARGETS[key]
    met = value >= target if op == ">=" else value <= target
    return f"{op} {target:.2f}: {'met' if met else 'MISSED'}"


def fmt(summary: dict) -> str:
    return f"**{summary['median']:.2f}** ({summary['min']:.2f} to {summary['max']:.2f})"


def report(results: dict) -> str:
    pages, sign_in, scale, prune = results["pages"], results["sign_in"], results["scale"], results["prune"]
    rps = {name: statistics.median(values) for name, values in pages["rps"].items()}
    lines = [
        "| ratio | median (min to max over rounds) | target | worker CPU per request, same ratio | per side, medians |",
        "|---|---|---|---|---|",
        f"| signed-in `/account` rps over signed-out `/` rps | {fmt(pages['signed_in'])} | {verdict('signed_in', pages['signed_in']['median'])} "
        f"| {fmt(pages['cpu_signed_in'])} | {rps['signed_in']:.0f} rps / {rps['anonymous']:.0f} rps |",
        f"| signed-in `/` rps over signed-out `/` (one template: only the hook differs) | {fmt(pages['same_page'])} | (none) "
        f"| {fmt(pages['cpu_same_page'])} | {rps['signed_in_root']:.0f} rps / {rps['anonymous']:.0f} rps |",
        f"| rotating request cost over non-rotating (`/account`) | {fmt(pages['rotation'])} | {verdict('rotation', pages['rotation']['median'])} "
        f"| {fmt(pages['cpu_rotation'])} | {rps['rotating']:.0f} rps rotating, {rps['signed_in']:.0f} rps not |",
        f"| rotation latency at {SCALE_ROWS + SMALL_ROWS:,} sessions over {SMALL_ROWS:,} | {fmt(scale['scale'])} | {verdict('scale', scale['scale']['median'])} "
        f"| {fmt(scale['cpu_scale'])} | p50 {statistics.median(scale['large_p50_ms']):.2f} ms / {statistics.median(scale['small_p50_ms']):.2f} ms |",
        f"| sign-in latency over one bcrypt check (cost {BCRYPT_ROUNDS}) | {fmt(sign_in['sign_in'])} | {verdict('sign_in', sign_in['sign_in']['median'])} "
        f"| {fmt(sign_in['cpu_sign_in'])} | p50 {statistics.median(sign_in['sign_in_ms']):.1f} ms / {statistics.median(sign_in['bcrypt_ms']):.1f} ms |",
        "",
    ]
    if "pending" in prune:
        lines.append(f"`flask prune` of {SCALE_ROWS:,} expired sessions: pending, {prune['pending']}.")
    else:
        lines.append(
            f"`flask prune` deleted {prune['deleted']:,} expired sessions (of {prune['expired_before']:,} left after the "
            f"workers' own opportunistic batches) in **{prune['prune_seconds']:.1f} s** "
            f"(output: `{prune['output']}`); meanwhile {prune['sign_ins']} sign-ins, the longest took "
            f"**{prune['max_sign_in_ms']:.0f} ms** (median {prune['median_sign_in_ms']:.0f} ms, {prune['failed_sign_ins']} failed; "
            f"with the table idle: median {prune['baseline_median_ms']:.0f} ms, longest {prune['baseline_max_ms']:.0f} ms)."
        )
    sizes = ", ".join(f"{name} {size:,} bytes" for name, size in pages["sizes"].items())
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}. "
        f"Run: {results['date']}, {ROUNDS} rounds ({SCALE_ROUNDS} for the scale row) of {SECONDS:g} s per side "
        f"(at least 3 s for sign-in), alternating.",
        f"Settings: gunicorn {WORKERS} sync workers, wrk 1 thread {CONNECTIONS} connections (1 for latencies), "
        f"APP_ENV=production, BCRYPT_ROUNDS={BCRYPT_ROUNDS}, SQLite in WAL mode; "
        f"{scale['filler_seconds']:.1f} s to bulk-insert {SCALE_ROWS:,} sessions.",
        f"Page sizes: {sizes}.",
    ]
    return "\n".join(lines) + "\n"


def write_results(table: str) -> None:
    RESULTS.write_text(
        "# Benchmark results\n\nWritten by `make bench` (bench/run.py, which explains the method). "
        "Latest run:\n\n" + table
    )
    readme = README.read_text()
    if README_START in readme and README_END in readme:
        head, rest = readme.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        README.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


def main() -> None:
    global WRK
    WRK = ensure_wrk()
    log(
        f"make bench: {os.cpu_count()} cores, {ROUNDS} rounds x {SECONDS:g} s, {WORKERS} gunicorn workers, BCRYPT_ROUNDS={BCRYPT_ROUNDS}"
    )
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="webapp-bench-") as tmp:
        workdir = Path(tmp)
        template = workdir / "template.sqlite3"
        migrate(app_environ(template, "migrate-only"))
        for name in ("main", "small", "large"):
            shutil.copy(template, workdir / f"{name}.sqlite3")

        log(f"hashing one password at cost {BCRYPT_ROUNDS} ...")
        password_hash = passwords.hash_password(PASSWORD, rounds=BCRYPT_ROUNDS)

        main_bench = Bench(workdir, workdir / "main.sqlite3")
        user_ids = main_bench.create_users(["pages@example.com", "rotating@example.com"], password_hash)
        # Twenty signed-in browsers: each writes its last-active time once a minute, as a
        # real one does, which is a negligible share of the requests here.
        signed = main_bench.create_sessions(user_ids[0], 20)
        rotating = main_bench.create_sessions(user_ids[1], 2000)
        sign_in_users = [f"sign-in-{n}@example.com" for n in range(20)]
        main_bench.create_users(sign_in_users, password_hash)

        with serve(main_bench.environ, WORKERS) as server:
            session_cookie, _ = browser_session_cookie(server.port, main_bench)
            signed.cookie_prefix = rotating.cookie_prefix = session_cookie
            if ONLY in ("", "pages"):
                log("1, 2: pages and rotation")
                results["pages"] = measure_pages(server, main_bench, signed, rotating)
            if ONLY in ("", "sign_in"):
                log("4: sign-in")
                results["sign_in"] = measure_sign_in(server, main_bench, sign_in_users, password_hash)
        if ONLY and ONLY != "scale":
            print(json.dumps(results, indent=2, default=str))
            return

        log(f"3: inserting {SCALE_ROWS:,} expired sessions ...")
        small, large = Bench(workdir, workdir / "small.sqlite3"), Bench(workdir, workdir / "large.sqlite3")
        pools = {}
        for name, bench in (("small", small), ("large", large)):
            (user_id,) = bench.create_users(["scale@example.com"], password_hash)
            pools[name] = bench.create_sessions(user_id, SMALL_ROWS)
        filler_seconds = bulk_expired_sessions(large.database, SCALE_ROWS, 1000, password_hash)
        log(f"  {filler_seconds:.1f} s")
        results["scale"] = measure_scale(small, large, pools, filler_seconds)
        prune_users = [f"prune-{n}@example.com" for n in range(20)]
        large.create_users(prune_users, password_hash)
        log("3: flask prune")
        results["prune"] = measure_prune(large, prune_users)
        if ONLY:
            print(json.dumps(results, indent=2, default=str))
            return

    table = report(results)
    print(table)
    if WRITE:
        write_results(table)
        log(f"written to {RESULTS.relative_to(ROOT)} and the README's Benchmarks section")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "latest.json").write_text(json.dumps(results, indent=2, default=str))


WRK = "wrk"

if __name__ == "__main__":
    main()
