"""`python -m bench`: set up the databases, run the measurements, print (and publish) the table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from webapp import passwords

from . import log
from .account_page import stored_activity
from .dbsc import DbscResult, measure_dbsc
from .measurements import (
    BenchResults,
    PagesResult,
    PruneResult,
    ScaleResult,
    SignInResult,
    measure_pages,
    measure_prune,
    measure_scale,
    measure_sign_in,
)
from .peers import PeersResult, measure_peers
from .population import (
    PASSWORD,
    SessionPool,
    create_security_events,
    create_sessions,
    create_users,
    insert_expired_sessions,
)
from .report import RESULTS, render_report, write_results
from .server import ROOT, AppUnderTest, first_page_cookie, migrate, serve
from .settings import Settings
from .wrk import find_wrk

LATEST_JSON = ROOT / "bench" / "out" / "latest.json"
# Users of the large table's expired sessions.
FILLER_USERS = 1000


# Our user in the comparison with the peers (6).
PEERS_EMAIL = "peers@example.com"


def measure_main_database(
    settings: Settings, workdir: Path, password_hash: str
) -> tuple[PagesResult | None, SignInResult | None, DbscResult | None, PeersResult | None]:
    """1, 2, 4, 5 and 6: pages, rotation, sign-in, device-bound refresh and the peers, on
    one server with the configured workers."""
    app = AppUnderTest.create(workdir / "main.sqlite3", bcrypt_rounds=settings.bcrypt_rounds)
    now = datetime.now(timezone.utc)
    pages_user, rotating_user, plain_user, bound_user, peers_user = create_users(
        app.database,
        ["pages@example.com", "rotating@example.com", "plain@example.com", "bound@example.com", PEERS_EMAIL],
        password_hash,
        now=now,
    )
    # Twenty signed-in browsers: each writes its last-active time once a minute, as a
    # real one does, which is a negligible share of the requests here.
    signed = create_sessions(app, pages_user, 20, now=now)
    rotating = create_sessions(app, rotating_user, 2000, now=now)
    plain = create_sessions(app, plain_user, 2000, now=now)
    # One signed line per session per run (bench/dbsc.py): enough for a run's requests.
    bound = create_sessions(app, bound_user, 6000, now=now)
    # The peers' user: twenty browsers too, and an account with history, so that its
    # /account lists five events as every peer's does (the pages user has none, and its
    # rows above stay as they were).
    peers_pool = create_sessions(app, peers_user, 20, now=now)
    create_security_events(app.database, peers_user, stored_activity(now))
    sign_in_users = [f"sign-in-{n}@example.com" for n in range(20)]
    create_users(app.database, sign_in_users, password_hash, now=now)
    pages = sign_in = dbsc = peers = None
    with serve(app.environ(), settings.workers) as server:
        cookie = first_page_cookie(server, app)
        if settings.runs("pages"):
            log("1, 2: pages and rotation")
            pages = measure_pages(server, cookie, signed=signed, rotating=rotating, settings=settings, workdir=workdir)
        if settings.runs("sign_in"):
            log("4: sign-in")
            sign_in = measure_sign_in(
                server, app, users=sign_in_users, password_hash=password_hash, settings=settings, workdir=workdir
            )
        if settings.runs("dbsc"):
            log("5: device-bound refresh against a plain rotation")
            dbsc = measure_dbsc(server, app, cookie, plain=plain, bound=bound, settings=settings, workdir=workdir)
        if settings.runs("peers"):
            log("6: signed-in /account against the peers")
            peers = measure_peers(
                server, cookie, signed=peers_pool, email=PEERS_EMAIL, settings=settings, workdir=workdir
            )
    return pages, sign_in, dbsc, peers


def measure_scale_databases(settings: Settings, workdir: Path, password_hash: str) -> tuple[ScaleResult, PruneResult]:
    """3: rotation beside a million expired sessions, then `flask prune` deleting them."""
    log(f"3: inserting {settings.scale_rows:,} expired sessions ...")
    small = AppUnderTest.create(workdir / "small.sqlite3", bcrypt_rounds=settings.bcrypt_rounds)
    large = AppUnderTest.create(workdir / "large.sqlite3", bcrypt_rounds=settings.bcrypt_rounds)
    now = datetime.now(timezone.utc)

    def live_sessions(app: AppUnderTest) -> SessionPool:
        (user_id,) = create_users(app.database, ["scale@example.com"], password_hash, now=now)
        return create_sessions(app, user_id, settings.live_rows, now=now)

    small_pool, large_pool = live_sessions(small), live_sessions(large)
    bulk_insert_seconds = insert_expired_sessions(
        large, rows=settings.scale_rows, users=FILLER_USERS, password_hash=password_hash, now=now
    )
    log(f"  {bulk_insert_seconds:.1f} s")
    scale = measure_scale(
        small=small_pool, large=large_pool, bulk_insert_seconds=bulk_insert_seconds, settings=settings, workdir=workdir
    )
    prune_users = [f"prune-{n}@example.com" for n in range(20)]
    create_users(large.database, prune_users, password_hash, now=datetime.now(timezone.utc))
    log("3: flask prune")
    prune = measure_prune(large, users=prune_users, settings=settings)
    return scale, prune


def run(settings: Settings, workdir: Path) -> BenchResults:
    """Every part `settings` asks for, on fresh databases in `workdir`."""
    started_at = datetime.now(timezone.utc)
    template = workdir / "template.sqlite3"
    migrate(AppUnderTest.create(template, bcrypt_rounds=settings.bcrypt_rounds))
    for name in ("main", "small", "large"):
        shutil.copy(template, workdir / f"{name}.sqlite3")
    log(f"hashing one password at cost {settings.bcrypt_rounds} ...")
    password_hash = passwords.hash_password(PASSWORD, rounds=settings.bcrypt_rounds)
    pages = sign_in = scale = prune = dbsc = peers = None
    if any(settings.runs(part) for part in ("pages", "sign_in", "dbsc", "peers")):
        pages, sign_in, dbsc, peers = measure_main_database(settings, workdir, password_hash)
    if settings.runs("scale"):
        scale, prune = measure_scale_databases(settings, workdir, password_hash)
    return BenchResults(started_at, pages, sign_in, scale, prune, dbsc, peers)


def main() -> None:
    settings = Settings.from_environ(os.environ, wrk=find_wrk())
    log(
        f"make bench: {os.cpu_count()} cores, {settings.rounds} rounds x {settings.seconds:g} s, "
        f"{settings.workers} gunicorn workers, BCRYPT_ROUNDS={settings.bcrypt_rounds}"
    )
    with tempfile.TemporaryDirectory(prefix="webapp-bench-") as tmp:
        results = run(settings, Path(tmp))
    results_json = json.dumps(dataclasses.asdict(results), indent=2, default=str)
    if settings.only:
        print(results_json)
        return
    table = render_report(results, settings)
    print(table)
    if settings.write:
        write_results(table)
        log(f"written to {RESULTS.relative_to(ROOT)} and the README's Benchmarks section")
    LATEST_JSON.parent.mkdir(exist_ok=True)
    LATEST_JSON.write_text(results_json)


if __name__ == "__main__":
    main()
