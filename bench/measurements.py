"""The four measurements and `flask prune`, each returning a frozen dataclass.

Every side of a ratio is measured in the same round as the other, in an order that
alternates from round to round, and every side is proven to be what it claims (a page
signed in, a request that rotates) before it is timed. `check` stops the run when a
self-check fails.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path

from webapp import passwords

from . import log
from .population import (
    FILLER_DEVICE,
    PASSWORD,
    SessionPool,
    access_lines,
    count_sessions,
    rotation_lines,
)
from .server import AppUnderTest, FlaskSessionCookie, Server, first_page_cookie, serve
from .settings import Settings
from .wrk import WrkResult, request_line, run_wrk

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def check(condition: bool, message: str) -> None:
    """Stop the run, saying what failed, unless `condition` holds."""
    if not condition:
        raise SystemExit(f"bench self-check failed: {message}")


@dataclass(frozen=True)
class RatioSummary:
    """A ratio measured once per round: the median, the lowest and highest, every round's value."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> RatioSummary:
        return cls(statistics.median(values), min(values), max(values), tuple(values))


@dataclass(frozen=True)
class Measured:
    """One wrk run, and the worker CPU time it cost per request."""

    wrk: WrkResult
    cpu_ms: float


def measured_wrk(
    server: Server,
    path: str,
    lines: Sequence[str],
    *,
    settings: Settings,
    workdir: Path,
    connections: int,
    seconds: int,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    cycle: bool = False,
) -> Measured:
    """`run_wrk` on `path` of `server`, with the workers' CPU time per request."""
    cpu_before = server.cpu_seconds()
    result = run_wrk(
        settings.wrk,
        server.url + path,
        lines,
        workdir,
        connections=connections,
        seconds=seconds,
        method=method,
        headers=headers,
        cycle=cycle,
    )
    cpu_seconds = server.cpu_seconds() - cpu_before
    return Measured(result, cpu_seconds * 1000 / max(1, result.requests))


# --- 1 and 2: pages and rotation ---------------------------------------------------------


class Page(Enum):
    """The four sides of the pages measurement, in the order of an even round."""

    ANONYMOUS = "/ signed out"
    SIGNED_IN = "/account signed in"
    SIGNED_IN_ROOT = "/ signed in"
    ROTATING = "/account rotating"


@dataclass(frozen=True)
class PageRounds:
    """One figure per round for each page."""

    anonymous: tuple[float, ...]
    signed_in: tuple[float, ...]
    signed_in_root: tuple[float, ...]
    rotating: tuple[float, ...]

    @classmethod
    def of(cls, figures: Callable[[Page], Sequence[float]]) -> PageRounds:
        return cls(
            anonymous=tuple(figures(Page.ANONYMOUS)),
            signed_in=tuple(figures(Page.SIGNED_IN)),
            signed_in_root=tuple(figures(Page.SIGNED_IN_ROOT)),
            rotating=tuple(figures(Page.ROTATING)),
        )


@dataclass(frozen=True)
class PageSizes:
    """Body sizes in bytes: the pages are templates of about the same size, and the report says so."""

    signed_out_root: int
    signed_in_account: int
    rotating_account: int
    signed_in_root: int


@dataclass(frozen=True)
class PagesResult:
    signed_in: RatioSummary  # signed-in /account rps over signed-out / rps
    same_page: RatioSummary  # signed-in / rps over signed-out / rps
    rotation: RatioSummary  # non-rotating /account rps over rotating /account rps
    cpu_signed_in: RatioSummary  # the same three as ratios of worker CPU per request
    cpu_same_page: RatioSummary
    cpu_rotation: RatioSummary
    rps: PageRounds
    cpu_ms: PageRounds
    sizes: PageSizes


def measure_pages(
    server: Server,
    cookie: FlaskSessionCookie,
    *,
    signed: SessionPool,
    rotating: SessionPool,
    settings: Settings,
    workdir: Path,
) -> PagesResult:
    """Rounds of four wrk runs: anonymous `/`, signed-in `/account`, signed-in `/`, and
    rotating `/account`."""
    # Prove each side is what it claims before timing it.
    reply = server.request("GET", "/", headers={"Cookie": cookie.pair})
    check(reply.status == 200 and b"Sign in" in reply.body and not reply.cookies(), f"anonymous / gave {reply.status}")
    signed_out_root = len(reply.body)
    signed_lines = access_lines(signed, cookie)
    reply = server.request("GET", "/account", headers={"Cookie": signed_lines[0]})
    check(reply.status == 200 and not reply.cookies(), f"signed-in /account gave {reply.status}")
    signed_in_account = len(reply.body)
    line = rotation_lines(rotating, cookie, with_expired_access=True, seconds=0)[0]
    reply = server.request("GET", "/account", headers={"Cookie": line})
    check(
        reply.status == 200 and len(reply.cookies()) == 2,
        f"rotating /account gave {reply.status} {reply.cookies().keys()}",
    )
    rotating_account = len(reply.body)
    reply = server.request("GET", "/", headers={"Cookie": signed_lines[0]})
    check(
        reply.status == 200 and b"Signed in as" in reply.body and not reply.cookies(),
        f"signed-in / gave {reply.status}",
    )
    sizes = PageSizes(signed_out_root, signed_in_account, rotating_account, signed_in_root=len(reply.body))

    def throughput(path: str, lines: Sequence[str], *, cycle: bool) -> Measured:
        return measured_wrk(
            server,
            path,
            lines,
            settings=settings,
            workdir=workdir,
            connections=settings.connections,
            seconds=settings.seconds,
            cycle=cycle,
        )

    def run_rotating() -> Measured:
        before = sum(rotating.counters().values())
        lines = rotation_lines(rotating, cookie, with_expired_access=True, seconds=settings.seconds)
        run = throughput("/account", lines, cycle=False)
        rotated = sum(rotating.counters().values()) - before
        # wrk stops counting at its deadline; a request or two in flight may still rotate.
        check(
            abs(rotated - run.wrk.requests) <= settings.connections,
            f"{run.wrk.requests} rotating requests but {rotated} rotations",
        )
        return run

    sides: dict[Page, Callable[[], Measured]] = {
        Page.ANONYMOUS: lambda: throughput("/", [request_line(cookie.pair)], cycle=True),
        Page.SIGNED_IN: lambda: throughput("/account", signed_lines, cycle=True),
        Page.SIGNED_IN_ROOT: lambda: throughput("/", signed_lines, cycle=True),
        Page.ROTATING: run_rotating,
    }
    runs: dict[Page, list[Measured]] = {page: [] for page in Page}
    for round_number in range(settings.rounds):
        # A B C D, then D C B A: a drift in the machine's load hits every side alike.
        for page in list(Page) if round_number % 2 == 0 else reversed(Page):
            runs[page].append(sides[page]())
        latest = {page: page_runs[-1] for page, page_runs in runs.items()}
        log(
            f"  round {round_number + 1}: / {latest[Page.ANONYMOUS].wrk.rps:.0f} rps, "
            f"/account {latest[Page.SIGNED_IN].wrk.rps:.0f} rps, "
            f"/ signed in {latest[Page.SIGNED_IN_ROOT].wrk.rps:.0f} rps, "
            f"rotating {latest[Page.ROTATING].wrk.rps:.0f} rps; worker CPU per request "
            + ", ".join(f"{latest[page].cpu_ms:.2f}" for page in Page)
            + " ms"
        )
    for page, page_runs in runs.items():
        check(all(run.wrk.errors == 0 for run in page_runs), f"{page.value}: wrk saw errors")

    def ratios(over: Callable[[Measured, Measured], float], upper: Page, lower: Page) -> RatioSummary:
        return RatioSummary.of([over(a, b) for a, b in zip(runs[upper], runs[lower], strict=True)])

    def rps(a: Measured, b: Measured) -> float:
        return a.wrk.rps / b.wrk.rps

    def cpu(a: Measured, b: Measured) -> float:
        # Inverted: less CPU per request is more requests per second.
        return b.cpu_ms / a.cpu_ms

    return PagesResult(
        signed_in=ratios(rps, Page.SIGNED_IN, Page.ANONYMOUS),
        same_page=ratios(rps, Page.SIGNED_IN_ROOT, Page.ANONYMOUS),
        rotation=ratios(rps, Page.SIGNED_IN, Page.ROTATING),
        cpu_signed_in=ratios(cpu, Page.SIGNED_IN, Page.ANONYMOUS),
        cpu_same_page=ratios(cpu, Page.SIGNED_IN_ROOT, Page.ANONYMOUS),
        cpu_rotation=ratios(cpu, Page.SIGNED_IN, Page.ROTATING),
        rps=PageRounds.of(lambda page: [run.wrk.rps for run in runs[page]]),
        cpu_ms=PageRounds.of(lambda page: [run.cpu_ms for run in runs[page]]),
        sizes=sizes,
    )


# --- 4: sign-in --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInResult:
    sign_in_p50_ms: tuple[float, ...]  # per round
    bcrypt_ms: tuple[float, ...]  # median of one round's checks, per round
    ratio: RatioSummary  # sign-in p50 over the bcrypt check
    cpu_ratio: RatioSummary  # worker CPU per sign-in over this process's CPU per check


@dataclass(frozen=True)
class BcryptTiming:
    median_ms: float
    cpu_ms: float  # per check


def time_bcrypt_checks(password_hash: str, seconds: float) -> BcryptTiming:
    """One bcrypt check after another in this process, for `seconds` and at least three."""
    checks = []
    deadline = time.perf_counter() + seconds
    cpu_started = time.process_time()
    while len(checks) < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        check(passwords.verify_password(PASSWORD, password_hash), "bcrypt check failed")
        checks.append((time.perf_counter() - started) * 1000)
    return BcryptTiming(statistics.median(checks), (time.process_time() - cpu_started) * 1000 / len(checks))


def measure_sign_in(
    server: Server, app: AppUnderTest, *, users: Sequence[str], password_hash: str, settings: Settings, workdir: Path
) -> SignInResult:
    """Rounds of: wrk signing in over one connection, and bcrypt checks in this process."""
    cookie = first_page_cookie(server, app)
    forms = [
        urllib.parse.urlencode({"csrf_token": cookie.csrf_token, "email": email, "password": PASSWORD})
        for email in users
    ]
    reply = server.request(
        "POST", "/auth/login", headers={"Cookie": cookie.pair, "Content-Type": FORM_CONTENT_TYPE}, body=forms[0]
    )
    check(reply.status == 302 and app.cookie_name("access_token") in reply.cookies(), f"sign-in gave {reply.status}")
    lines = [request_line(cookie.pair, form) for form in forms]
    # As long as a wrk run: a few sign-ins at bcrypt's cost need at least 3 s.
    seconds = max(settings.seconds, 3)
    sign_in_runs: list[WrkResult] = []
    sign_in_cpu_ms: list[float] = []
    bcrypt: list[BcryptTiming] = []
    for round_number in range(settings.rounds):
        # wrk then bcrypt, then bcrypt then wrk: a drift in the machine's load hits both.
        if round_number % 2:
            bcrypt.append(time_bcrypt_checks(password_hash, seconds))
        # CPU per sign-in over the sign-ins the server finished (sessions it created),
        # once the one wrk left in flight is done: with a few requests per round, the
        # in-flight one would skew a per-request figure by wrk's count.
        sessions_before, cpu_before = count_sessions(app.database), server.cpu_seconds()
        result = run_wrk(
            settings.wrk,
            server.url + "/auth/login",
            lines,
            workdir,
            connections=1,
            seconds=seconds,
            method="POST",
            cycle=True,
        )
        time.sleep(2)
        signed_in = count_sessions(app.database) - sessions_before
        sign_in_cpu_ms.append((server.cpu_seconds() - cpu_before) * 1000 / max(1, signed_in))
        check(
            result.errors == 0 and result.requests >= 3 and signed_in >= result.requests,
            f"sign-in round: {result}, {signed_in} sessions",
        )
        if round_number % 2 == 0:
            bcrypt.append(time_bcrypt_checks(password_hash, seconds))
        sign_in_runs.append(result)
        log(f"  round {round_number + 1}: sign-in p50 {result.p50_ms:.1f} ms, bcrypt {bcrypt[-1].median_ms:.1f} ms")
    return SignInResult(
        sign_in_p50_ms=tuple(result.p50_ms for result in sign_in_runs),
        bcrypt_ms=tuple(timing.median_ms for timing in bcrypt),
        ratio=RatioSummary.of(
            [result.p50_ms / timing.median_ms for result, timing in zip(sign_in_runs, bcrypt, strict=True)]
        ),
        cpu_ratio=RatioSummary.of(
            [cpu_ms / timing.cpu_ms for cpu_ms, timing in zip(sign_in_cpu_ms, bcrypt, strict=True)]
        ),
    )


# --- 3: scale, and flask prune -----------------------------------------------------------


@dataclass(frozen=True)
class ScaleResult:
    small_p50_ms: tuple[float, ...]  # per round, rotation latency at live_rows sessions
    large_p50_ms: tuple[float, ...]  # the same beside scale_rows expired ones
    ratio: RatioSummary  # large over small
    cpu_ratio: RatioSummary  # the same of worker CPU per rotation
    bulk_insert_seconds: float  # to insert the scale_rows expired sessions


@dataclass
class _ScaleSide:
    """One table's server during the scale rounds, and its runs so far."""

    name: str
    pool: SessionPool
    server: Server
    cookie: FlaskSessionCookie
    runs: list[Measured] = field(default_factory=list)


def measure_scale(
    *, small: SessionPool, large: SessionPool, bulk_insert_seconds: float, settings: Settings, workdir: Path
) -> ScaleResult:
    """Rounds of wrk on POST /auth/refresh over one connection: the small table's server,
    then the large one's, alternating (one worker each)."""
    with ExitStack() as stack:

        def start(name: str, pool: SessionPool) -> _ScaleSide:
            server = stack.enter_context(serve(pool.app.environ(), 1))
            cookie = first_page_cookie(server, pool.app)
            line = rotation_lines(pool, cookie, with_expired_access=False, seconds=0)[0]
            reply = server.request("POST", "/auth/refresh", headers={"Cookie": line, "X-CSRFToken": cookie.csrf_token})
            check(reply.status == 204 and len(reply.cookies()) == 2, f"{name}: /auth/refresh gave {reply.status}")
            return _ScaleSide(name, pool, server, cookie)

        small_side, large_side = start("small", small), start("large", large)
        for round_number in range(settings.scale_rounds):
            order = (small_side, large_side) if round_number % 2 == 0 else (large_side, small_side)
            for side in order:
                lines = rotation_lines(side.pool, side.cookie, with_expired_access=False, seconds=settings.seconds)
                run = measured_wrk(
                    side.server,
                    "/auth/refresh",
                    lines,
                    settings=settings,
                    workdir=workdir,
                    connections=1,
                    seconds=settings.seconds,
                    method="POST",
                    headers={"X-CSRFToken": side.cookie.csrf_token},
                )
                check(run.wrk.errors == 0, f"{side.name} rotation: wrk saw errors")
                side.runs.append(run)
            log(
                f"  round {round_number + 1}: p50 {small_side.runs[-1].wrk.p50_ms:.2f} ms at {settings.live_rows:,} "
                f"sessions, {large_side.runs[-1].wrk.p50_ms:.2f} ms at {settings.scale_rows + settings.live_rows:,}"
            )
    pairs = list(zip(small_side.runs, large_side.runs, strict=True))
    return ScaleResult(
        small_p50_ms=tuple(run.wrk.p50_ms for run in small_side.runs),
        large_p50_ms=tuple(run.wrk.p50_ms for run in large_side.runs),
        ratio=RatioSummary.of([large_run.wrk.p50_ms / small_run.wrk.p50_ms for small_run, large_run in pairs]),
        cpu_ratio=RatioSummary.of([large_run.cpu_ms / small_run.cpu_ms for small_run, large_run in pairs]),
        bulk_insert_seconds=bulk_insert_seconds,
    )


@dataclass(frozen=True)
class PruneResult:
    seconds: float
    # Expired rows left when prune started: the first sign-in of each worker prunes one
    # small batch on its own.
    expired_before: int
    deleted: int
    output: str  # what `flask prune` printed
    sign_ins: int  # finished while prune ran
    median_sign_in_ms: float
    max_sign_in_ms: float
    failed_sign_ins: int
    baseline_median_ms: float  # sign-ins with the table idle, just before
    baseline_max_ms: float


@dataclass(frozen=True)
class _SignInWait:
    milliseconds: float
    status: int


@contextmanager
def _signing_in(server: Server, cookie: FlaskSessionCookie, users: Sequence[str]) -> Iterator[list[_SignInWait]]:
    """One client signing in again and again, in a thread, until the block ends; yields
    the list of its sign-ins, complete once the block has ended."""
    stop, waits = threading.Event(), []

    def sign_in_until_stopped() -> None:
        for index in itertools.count():
            body = urllib.parse.urlencode(
                {"csrf_token": cookie.csrf_token, "email": users[index % len(users)], "password": PASSWORD}
            )
            started = time.perf_counter()
            reply = server.request(
                "POST", "/auth/login", headers={"Cookie": cookie.pair, "Content-Type": FORM_CONTENT_TYPE}, body=body
            )
            waits.append(_SignInWait((time.perf_counter() - started) * 1000, reply.status))
            # Checked after the sign-in, not before: at least one, however short the block.
            if stop.is_set():
                return

    thread = threading.Thread(target=sign_in_until_stopped)
    thread.start()
    try:
        yield waits
    finally:
        stop.set()
        thread.join()


def measure_prune(app: AppUnderTest, *, users: Sequence[str], settings: Settings) -> PruneResult:
    """`flask prune` on the large database while one client signs in again and again."""
    with serve(app.environ(), 1) as server:
        cookie = first_page_cookie(server, app)
        # A baseline of sign-ins with the table idle, then the same during prune.
        with _signing_in(server, cookie, users) as baseline:
            time.sleep(max(settings.seconds, 3.0))
        expired_before = count_sessions(app.database, user_agent=FILLER_DEVICE.user_agent)
        with _signing_in(server, cookie, users) as during:
            started = time.perf_counter()
            out = app.run_flask("prune")
            seconds = time.perf_counter() - started
        expired_after = count_sessions(app.database, user_agent=FILLER_DEVICE.user_agent)
    check(out.returncode == 0, f"flask prune failed: {out.stderr[-2000:]}")
    return PruneResult(
        seconds=seconds,
        expired_before=expired_before,
        deleted=expired_before - expired_after,
        output=out.stdout.strip(),
        sign_ins=len(during),
        median_sign_in_ms=statistics.median(wait.milliseconds for wait in during),
        max_sign_in_ms=max(wait.milliseconds for wait in during),
        failed_sign_ins=sum(1 for wait in during if wait.status != 302),
        baseline_median_ms=statistics.median(wait.milliseconds for wait in baseline),
        baseline_max_ms=max(wait.milliseconds for wait in baseline),
    )


@dataclass(frozen=True)
class BenchResults:
    """Everything one run measured; a part BENCH_ONLY left out is None."""

    started_at: datetime
    pages: PagesResult | None
    sign_in: SignInResult | None
    scale: ScaleResult | None
    prune: PruneResult | None
    dbsc: object | None = None  # bench.dbsc.DbscResult
    peers: object | None = None  # bench.peers.PeersResult
