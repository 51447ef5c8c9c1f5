"""6: our signed-in `/account` against what people would pick instead, in one run.

The sides, all rendering templates/account/profile.html with the same context shape and
five activity rows (bench/account_page.py), each served by gunicorn with our settings
(the same command, gunicorn.conf.py's threaded workers, BENCH_WORKERS workers):
- ours: the main server and twenty signed-in browsers of a user with five security events;
- the floor (bench/peer_floor.py): no authentication at all;
- Flask-JWT-Extended (bench/peer_jwt_extended.py): JWT cookies, a database blocklist,
  automatic user loading and implicit refresh;
- Flask-Login over Flask-Session (bench/peer_flask_login.py), with SQLAlchemy on SQLite,
  and with Redis when one answers at 127.0.0.1:6379 (under a key prefix of this run's
  own, whose keys are deleted afterwards).

Each peer's browsers sign in through its own login view. Before timing, every side proves
what it claims: the page is 200, signed in as that browser's user, lists five events and
weighs within a few percent of ours; a second request of the same browser (the steady
state) sets no cookie, except Flask-Session's, which by design sets its cookie on every
request; and for the peers with server-side state, signing a browser out makes its
cookies worthless. Then rounds of wrk on every side, in an order reversed every other
round; each round gives one ratio per peer, ours over it, in requests per second and in
worker CPU per request (the worker processes only: SQLite runs inside them, Redis does
not).
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from werkzeug.security import generate_password_hash

from . import log, peer_flask_login, peer_jwt_extended
from .measurements import FORM_CONTENT_TYPE, Measured, RatioSummary, check, measured_wrk
from .peer_floor import FLOOR_EMAIL
from .population import PASSWORD, SessionPool, access_lines
from .server import FlaskSessionCookie, Reply, Server, inherited_environ, serve
from .settings import Settings
from .wrk import request_line

ACCOUNT_PATH = "/account"
# Signed-in browsers per peer, cycled by wrk's lines, as ours has.
PEER_BROWSERS = 20
REDIS_URL = "redis://127.0.0.1:6379/0"
# Rows of the activity list, on every side.
ACTIVITY_ROWS = 5
# How far a peer's page may weigh from ours: the words of the times differ a little.
SIZE_TOLERANCE = 0.05


class Side(Enum):
    """The sides of one round, in the order of an even round."""

    OURS = "ours"
    FLOOR = "floor"
    JWT_EXTENDED = "jwt_extended"
    LOGIN_SQLALCHEMY = "login_sqlalchemy"
    LOGIN_REDIS = "login_redis"


LABELS = {
    Side.OURS: "ours",
    Side.FLOOR: "the floor (Flask, no auth)",
    Side.JWT_EXTENDED: "Flask-JWT-Extended",
    Side.LOGIN_SQLALCHEMY: "Flask-Login + Flask-Session (SQLAlchemy)",
    Side.LOGIN_REDIS: "Flask-Login + Flask-Session (Redis)",
}


@dataclass(frozen=True)
class PeerComparison:
    """Ours against one peer: per-round ratios and the peer's own figures."""

    peer: str  # a Side's value
    label: str
    over_peer: RatioSummary  # our rps over the peer's
    cpu_over_peer: RatioSummary  # the peer's worker CPU per request over ours
    peer_rps: tuple[float, ...]
    peer_cpu_ms: tuple[float, ...]
    peer_page_bytes: int
    sets_cookie_each_request: bool


@dataclass(frozen=True)
class PeersResult:
    ours_rps: tuple[float, ...]
    ours_cpu_ms: tuple[float, ...]
    ours_page_bytes: int
    comparisons: tuple[PeerComparison, ...]
    skipped: tuple[str, ...]  # peers not measured, and why

    def comparison(self, side: Side) -> PeerComparison | None:
        return next((found for found in self.comparisons if found.peer == side.value), None)


@dataclass(frozen=True)
class _Contender:
    """One side during the rounds: its server, the lines its browsers send, and who they are."""

    side: Side
    server: Server
    lines: tuple[str, ...]
    email: str  # of the first line's user
    sets_cookie_each_request: bool


def redis_unavailable(url: str) -> str | None:
    """Why Redis at `url` cannot be used, or None when it answers."""
    try:
        Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except RedisError as error:
        return f"no Redis answers at {url} ({error})"
    return None


def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (this run's own, nobody else's), saying how many.
    Runs on the way out, perhaps after a failure: a Redis gone by then is reported, not
    raised over that failure."""
    try:
        client = Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    except RedisError as error:
        log(f"  could not delete the Redis keys under {prefix}: {error}")
        return
    log(f"  deleted {len(keys)} Redis keys under {prefix}")


def peer_environ(secret: str, **settings: str) -> dict[str, str]:
    """A peer's environment: the inherited one, its secret and its PEER_* settings."""
    return {
        **inherited_environ(),
        "SECRET_KEY": secret,
        "PYTHONDONTWRITEBYTECODE": "1",
        # gunicorn.conf.py refuses several workers over in-memory sign-in limits: ours
        # only, the peers have none.
        "ALLOW_PER_PROCESS_LIMITS": "on",
        **settings,
    }


def _cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def sign_in_through_login_view(server: Server, login_path: str, email: str) -> str:
    """Sign a new browser in as `email` the way a person does: the login page (its cookies
    and the form's CSRF token, if any), then the form. Returns the Cookie header the
    browser sends from then on."""
    page = server.request("GET", login_path)
    check(page.status == 200, f"{server.url}: the login page gave {page.status}")
    jar = page.cookies()
    form = {"email": email, "password": PASSWORD}
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.body)
    if token is not None:
        form["csrf_token"] = token[1].decode()
    headers = {"Content-Type": FORM_CONTENT_TYPE}
    if jar:
        headers["Cookie"] = _cookie_header(jar)
    reply = server.request("POST", login_path, headers=headers, body=urllib.parse.urlencode(form))
    check(reply.status == 302 and reply.cookies(), f"{server.url}: signing in as {email} gave {reply.status}")
    jar.update(reply.cookies())
    return _cookie_header(jar)


def _get_account(server: Server, cookie: str) -> Reply:
    return server.request("GET", ACCOUNT_PATH, headers={"Cookie": cookie} if cookie else {})


def prove_signed_in_page(contender: _Contender, ours_bytes: int | None) -> int:
    """Check that `contender`'s first browser gets its signed-in page, with the activity
    rows, and that a second request sets a cookie only where the side does so by design.
    Returns the page's size in bytes."""
    name = LABELS[contender.side]
    cookie = contender.lines[0]
    reply = _get_account(contender.server, cookie)
    check(reply.status == 200, f"{name}: /account gave {reply.status}")
    check(
        f'data-testid="account-email">{contender.email}<'.encode() in reply.body,
        f"{name}: /account does not show {contender.email}",
    )
    rows = reply.body.count(b"data-event data-kind")
    check(rows == ACTIVITY_ROWS, f"{name}: /account lists {rows} events, not {ACTIVITY_ROWS}")
    size = len(reply.body)
    if ours_bytes is not None:
        check(
            abs(size - ours_bytes) <= SIZE_TOLERANCE * ours_bytes,
            f"{name}: /account weighs {size} bytes, ours {ours_bytes}",
        )
    steady = _get_account(contender.server, cookie)
    set_cookies = steady.cookies()
    check(steady.status == 200, f"{name}: a second /account gave {steady.status}")
    if contender.sets_cookie_each_request:
        # Flask-Session re-sends the same session id with a later expiry.
        sent = dict(pair.split("=", 1) for pair in cookie.split("; "))
        check(
            bool(set_cookies) and all(sent.get(key) == value for key, value in set_cookies.items()),
            f"{name}: a steady-state request set {set_cookies}, not the same session cookie again",
        )
    else:
        check(not set_cookies, f"{name}: a steady-state request set cookies {sorted(set_cookies)}")
    log(
        f"  {name}: 200, signed in as {contender.email}, {rows} events, {size:,} bytes, "
        + ("sets its session cookie again on every request (by design)" if set_cookies else "no cookie set")
    )
    return size


def prove_sign_out_ends_session(server: Server, name: str, cookie: str) -> None:
    """Sign the browser with `cookie` out with the page's own form, then check that the
    same cookies no longer get the page: the peer keeps state on the server and reads it."""
    page = _get_account(server, cookie)
    action = re.search(rb'<form method="post" action="([^"]+)"', page.body)
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.body)
    if page.status != 200 or action is None or token is None:
        raise SystemExit(f"bench self-check failed: {name}: no sign-out form on /account")
    reply = server.request(
        "POST",
        action[1].decode(),
        headers={"Cookie": cookie, "Content-Type": FORM_CONTENT_TYPE},
        body=urllib.parse.urlencode({"csrf_token": token[1].decode()}),
    )
    check(reply.status == 302, f"{name}: signing out gave {reply.status}")
    after = _get_account(server, cookie)
    check(after.status != 200, f"{name}: the cookies of a signed-out browser still get /account")
    log(f"  {name}: signed out, the same cookies get {after.status}")


def _compare(runs: dict[Side, list[Measured]], peer: Side, *, page_bytes: int, sets_cookie: bool) -> PeerComparison:
    pairs = list(zip(runs[Side.OURS], runs[peer], strict=True))
    return PeerComparison(
        peer=peer.value,
        label=LABELS[peer],
        over_peer=RatioSummary.of([ours.wrk.rps / theirs.wrk.rps for ours, theirs in pairs]),
        # Inverted: less CPU per request is more requests per second.
        cpu_over_peer=RatioSummary.of([theirs.cpu_ms / ours.cpu_ms for ours, theirs in pairs]),
        peer_rps=tuple(run.wrk.rps for run in runs[peer]),
        peer_cpu_ms=tuple(run.cpu_ms for run in runs[peer]),
        peer_page_bytes=page_bytes,
        sets_cookie_each_request=sets_cookie,
    )


# Makes a peer's database in this process before gunicorn starts, so that its workers
# find the schema (two workers creating it at once would race): (environ, emails, hash).
DatabaseMaker = Callable[[Mapping[str, str], Sequence[str], str], None]


def _jwt_extended_database(environ: Mapping[str, str], emails: Sequence[str], password_hash: str) -> None:
    peer_jwt_extended.create_database(peer_jwt_extended.create_app(environ), emails, password_hash)


def _flask_login_database(environ: Mapping[str, str], emails: Sequence[str], password_hash: str) -> None:
    peer_flask_login.create_database(peer_flask_login.create_app(environ), emails, password_hash)


@dataclass(frozen=True)
class PeerSetup:
    """How to serve one peer whose browsers sign in."""

    side: Side
    target: str  # gunicorn's WSGI target
    login_path: str  # its login view: a form of email and password
    settings: Mapping[str, str]  # its PEER_* variables
    make_database: DatabaseMaker
    sets_cookie_each_request: bool

    def emails(self) -> list[str]:
        """Its users: one per browser, and one more to sign out."""
        return [f"{self.side.value.replace('_', '-')}-{n}@example.com" for n in range(PEER_BROWSERS + 1)]


def peer_setups(workdir: Path, *, redis_prefix: str | None) -> list[PeerSetup]:
    """The peers with a sign-in, each on its own SQLite database in `workdir`; the Redis
    variant only with a `redis_prefix`."""

    def database_url(side: Side) -> str:
        return f"sqlite:///{workdir / f'peer-{side.value}.sqlite3'}"

    setups = [
        PeerSetup(
            Side.JWT_EXTENDED,
            "bench.peer_jwt_extended:create_app()",
            peer_jwt_extended.LOGIN_PATH,
            {"PEER_DATABASE_URL": database_url(Side.JWT_EXTENDED)},
            _jwt_extended_database,
            sets_cookie_each_request=False,
        ),
        PeerSetup(
            Side.LOGIN_SQLALCHEMY,
            "bench.peer_flask_login:create_app()",
            peer_flask_login.LOGIN_PATH,
            {"PEER_DATABASE_URL": database_url(Side.LOGIN_SQLALCHEMY), "PEER_SESSION_TYPE": "sqlalchemy"},
            _flask_login_database,
            sets_cookie_each_request=True,
        ),
    ]
    if redis_prefix is not None:
        setups.append(
            PeerSetup(
                Side.LOGIN_REDIS,
                "bench.peer_flask_login:create_app()",
                peer_flask_login.LOGIN_PATH,
                {
                    "PEER_DATABASE_URL": database_url(Side.LOGIN_REDIS),
                    "PEER_SESSION_TYPE": "redis",
                    "PEER_REDIS_URL": REDIS_URL,
                    "PEER_SESSION_KEY_PREFIX": redis_prefix,
                },
                _flask_login_database,
                sets_cookie_each_request=True,
            )
        )
    return setups


def _run_rounds(contenders: Sequence[_Contender], *, settings: Settings, workdir: Path) -> dict[Side, list[Measured]]:
    runs: dict[Side, list[Measured]] = {contender.side: [] for contender in contenders}
    for round_number in range(settings.rounds):
        # A B C D E, then E D C B A: a drift in the machine's load hits every side alike.
        order = contenders if round_number % 2 == 0 else list(reversed(contenders))
        for contender in order:
            runs[contender.side].append(
                measured_wrk(
                    contender.server,
                    ACCOUNT_PATH,
                    contender.lines,
                    settings=settings,
                    workdir=workdir,
                    connections=settings.connections,
                    seconds=settings.seconds,
                    cycle=True,
                )
            )
        log(
            f"  round {round_number + 1}: "
            + ", ".join(
                f"{side.value} {side_runs[-1].wrk.rps:.0f} rps ({side_runs[-1].cpu_ms:.2f} ms CPU)"
                for side, side_runs in runs.items()
            )
        )
    for side, side_runs in runs.items():
        check(all(run.wrk.errors == 0 for run in side_runs), f"{LABELS[side]}: wrk saw errors")
    return runs


def measure_peers(
    server: Server,
    cookie: FlaskSessionCookie,
    *,
    signed: SessionPool,
    email: str,
    settings: Settings,
    workdir: Path,
) -> PeersResult:
    """Start the peers, sign their browsers in, prove every side, then the rounds.
    `server` is ours, `signed` the sessions of its user `email` (with five events)."""
    skipped: list[str] = []
    redis_problem = redis_unavailable(REDIS_URL)
    if redis_problem is not None:
        skipped.append(f"{LABELS[Side.LOGIN_REDIS]}: {redis_problem}")
        log(f"  not measuring {LABELS[Side.LOGIN_REDIS]}: {redis_problem}")
    redis_prefix = None if redis_problem else f"webapp-bench-{secrets.token_hex(6)}:"
    # One hash for every peer user: werkzeug's default (scrypt), as in Flask's tutorial.
    password_hash = generate_password_hash(PASSWORD)

    with ExitStack() as stack:
        log("6: starting the peers and signing their browsers in")
        ours = _Contender(Side.OURS, server, tuple(access_lines(signed, cookie)), email, False)
        floor_server = stack.enter_context(
            serve(
                peer_environ(secrets.token_urlsafe(48)),
                settings.workers,
                target="bench.peer_floor:create_app()",
                ready_path=ACCOUNT_PATH,
            )
        )
        # No authentication: one line without a cookie.
        contenders = [ours, _Contender(Side.FLOOR, floor_server, (request_line(""),), FLOOR_EMAIL, False)]
        if redis_prefix is not None:
            # Registered before the Redis peer starts, so it runs once that peer has stopped.
            stack.callback(delete_redis_keys, REDIS_URL, redis_prefix)
        signing_out: list[tuple[Side, Server, str]] = []
        for setup in peer_setups(workdir, redis_prefix=redis_prefix):
            emails = setup.emails()
            environ = peer_environ(secrets.token_urlsafe(48), **setup.settings)
            setup.make_database(environ, emails, password_hash)
            peer_server = stack.enter_context(
                serve(environ, settings.workers, target=setup.target, ready_path=setup.login_path)
            )
            browsers = [sign_in_through_login_view(peer_server, setup.login_path, address) for address in emails]
            # The last browser only proves that signing out ends its session.
            signing_out.append((setup.side, peer_server, browsers.pop()))
            contenders.append(
                _Contender(
                    setup.side,
                    peer_server,
                    tuple(request_line(browser) for browser in browsers),
                    emails[0],
                    setup.sets_cookie_each_request,
                )
            )

        log("6: proving every side")
        sizes = {Side.OURS: prove_signed_in_page(ours, None)}
        for contender in contenders[1:]:
            sizes[contender.side] = prove_signed_in_page(contender, sizes[Side.OURS])
        for side, peer_server, browser in signing_out:
            prove_sign_out_ends_session(peer_server, LABELS[side], browser)

        log(f"6: {settings.rounds} rounds over {len(contenders)} sides")
        runs = _run_rounds(contenders, settings=settings, workdir=workdir)

    comparisons = tuple(
        _compare(runs, contender.side, page_bytes=sizes[contender.side], sets_cookie=contender.sets_cookie_each_request)
        for contender in contenders[1:]
    )
    for comparison in comparisons:
        log(
            f"  ours over {comparison.label}: {comparison.over_peer.median:.2f} "
            f"({comparison.over_peer.low:.2f} to {comparison.over_peer.high:.2f}) in rps, "
            f"{comparison.cpu_over_peer.median:.2f} ({comparison.cpu_over_peer.low:.2f} to "
            f"{comparison.cpu_over_peer.high:.2f}) in worker CPU per request"
        )
    return PeersResult(
        ours_rps=tuple(run.wrk.rps for run in runs[Side.OURS]),
        ours_cpu_ms=tuple(run.cpu_ms for run in runs[Side.OURS]),
        ours_page_bytes=sizes[Side.OURS],
        comparisons=comparisons,
        skipped=tuple(skipped),
    )
