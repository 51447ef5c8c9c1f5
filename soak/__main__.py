"""`python -m soak`: start the production shape, load it with faults, judge, report."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from . import log
from .app_server import REFRESH_REUSE_GRACE, AppConfig, migrate, serve
from .consistency import check_sessions, read_sessions
from .faults import FaultTimeline
from .load import WIND_DOWN_SECONDS, read_locust_stats, start_locust, wait_for_locust
from .observations import LoadPlan, Observations
from .processes import stop_group
from .report import RESULTS, render_report, write_results
from .services import make_certificates, private_postgres, private_redis
from .settings import Settings, SettingsError
from .telemetry import LogCheck, Telemetry, check_log, scrape_metrics, secrets_to_look_for
from .verdict import judge

PROGRESS_EVERY = 30
# Tracebacks in the server log, quoted in the report when something went wrong.
TRACEBACKS_QUOTED = 2


def server_errors(log_file: Path, log_check: LogCheck) -> str:
    """The first exceptions of the app's log (JSON lines carry theirs whole), else the
    first plain tracebacks (gunicorn's), each with the line before it (an expected outage
    logs none)."""
    if log_check.exceptions:
        return "\n\n".join(log_check.exceptions[:TRACEBACKS_QUOTED])
    if not log_file.exists():
        return ""
    lines = log_file.read_text(errors="replace").splitlines()
    quoted: list[str] = []
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback")]
    for start in starts[:TRACEBACKS_QUOTED]:
        # The frames are indented; the exception's own line is the first that is not.
        end = next((j for j in range(start + 1, len(lines)) if not lines[j].startswith(" ")), len(lines) - 1)
        quoted += lines[max(0, start - 1) : end + 1] + [""]
    return "\n".join(quoted).strip()


def run(settings: Settings, workdir: Path) -> int:
    certificates = make_certificates(workdir / "tls")
    with ExitStack() as stack:
        log("starting the private PostgreSQL and Redis ...")
        postgres = stack.enter_context(private_postgres(workdir / "postgres"))
        redis_server = stack.enter_context(private_redis(workdir / "redis"))
        app = AppConfig.create(
            database_url=postgres.url,
            ratelimit_storage_uri=redis_server.url,
            access_token_ttl=settings.access_token_ttl,
            certificates=certificates,
        )
        migrate(app)
        gunicorn = stack.enter_context(serve(app, workers=settings.workers, log=workdir / "gunicorn.log"))
        log(f"gunicorn -w {settings.workers} on {gunicorn.base_url}: {settings.users} browsers, {settings.seconds} s")

        load_started_at = time.time()
        plan = LoadPlan(
            base_url=gunicorn.base_url,
            ca_file=str(certificates.ca_file),
            observations_file=str(workdir / "observations.json"),
            deadline=load_started_at + settings.seconds,
            access_token_ttl=settings.access_token_ttl,
            reuse_grace=REFRESH_REUSE_GRACE,
            think_seconds=settings.think_seconds,
            run_id=secrets.token_hex(3),
            users=settings.users,
        )
        plan_file = workdir / "plan.json"
        plan.dump(plan_file)
        locust = start_locust(plan, plan_file, spawn_rate=settings.spawn_rate, workdir=workdir)
        stack.callback(stop_group, locust)
        faults = FaultTimeline(
            gunicorn=gunicorn,
            postgres=postgres,
            redis=redis_server,
            pg_mode=settings.pg_restart_mode,
            redis_outage=settings.redis_outage_seconds,
        )
        faults.start(load_started_at=load_started_at, seconds=settings.seconds)
        stack.callback(faults.stop)

        limit = load_started_at + settings.seconds + WIND_DOWN_SECONDS + 120
        next_progress = PROGRESS_EVERY
        while locust.poll() is None and time.time() < limit:
            time.sleep(1)
            elapsed = time.time() - load_started_at
            if elapsed >= next_progress and elapsed <= settings.seconds:
                log(f"load: {next_progress} of {settings.seconds} s")
                next_progress += PROGRESS_EVERY
        wait_for_locust(locust, timeout=max(1.0, limit - time.time()))
        faults.stop()
        # The app's own count of the soak, summed over its workers (the killed one's too).
        scrape = scrape_metrics(gunicorn, app.metrics_token)
        observations_file = Path(plan.observations_file)
        if not observations_file.exists():
            log((workdir / "locust.log").read_text(errors="replace")[-3000:])
            raise RuntimeError("Locust ended without writing what the browsers saw (its log is above)")

        seen = Observations.load(observations_file)
        rows, reuse_events = read_sessions(postgres.conninfo)
    # gunicorn has stopped: its log is whole.
    log_file = workdir / "gunicorn.log"
    log_check = check_log(log_file, secrets_to_look_for(seen.secrets, app.metrics_token))
    telemetry = Telemetry(scrape, log_check, health_checks=len(gunicorn.health_checks))
    consistency = check_sessions(rows, reuse_events, seen)
    verdict = judge(seen, faults.windows, consistency, telemetry, load_seconds=settings.seconds)
    report = render_report(
        verdict,
        consistency,
        faults.windows,
        read_locust_stats(workdir),
        settings,
        load_started_at=load_started_at,
        server_log_excerpt=server_errors(log_file, log_check) if not verdict.passed else "",
    )
    print(report)
    if settings.write:
        write_results(report)
        log(f"written to {RESULTS}")
    return 0 if verdict.passed else 1


def main() -> int:
    try:
        settings = Settings.from_environ(os.environ)
    except SettingsError as error:
        log(f"soak: {error}")
        return 2
    # A SIGTERM unwinds like Ctrl-C does: every `with` and `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="webapp-soak-"))
    # The PostgreSQL server runs as the postgres user, which must reach its folder in here.
    workdir.chmod(0o711)
    try:
        return run(settings, workdir)
    except KeyboardInterrupt:
        log("soak: interrupted; everything it started has been stopped")
        return 130
    finally:
        if settings.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
