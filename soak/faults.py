"""The faults of a soak, on a timeline measured from the start of the load: one gunicorn
worker killed with SIGKILL, the private PostgreSQL restarted, the private Redis stopped
and started again. Each leaves a `FaultWindow`: when it began and ended, in wall-clock
seconds, which the verdict uses to tell the answers an outage explains from the rest.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import log
from .app_server import Gunicorn
from .services import PrivatePostgres, PrivateRedis, ServiceError

WORKER_KILL = "worker_kill"
POSTGRES_RESTART = "postgres_restart"
REDIS_OUTAGE = "redis_outage"
# Where in the load each fault happens, as a share of SOAK_SECONDS: after every browser
# has started, and apart, so that each one's effects can be told from the others'.
SCHEDULE = ((WORKER_KILL, 0.35), (POSTGRES_RESTART, 0.55), (REDIS_OUTAGE, 0.75))


@dataclass(frozen=True)
class FaultWindow:
    kind: str
    started_at: float  # time.time()
    ended_at: float
    detail: str
    applied: bool  # False: the fault could not be applied (detail says why)


class FaultTimeline:
    """Applies the faults in a thread of its own, at their times, until stopped."""

    def __init__(
        self, *, gunicorn: Gunicorn, postgres: PrivatePostgres, redis: PrivateRedis, pg_mode: str, redis_outage: float
    ):
        self.gunicorn = gunicorn
        self.postgres = postgres
        self.redis = redis
        self.pg_mode = pg_mode
        self.redis_outage = redis_outage
        self.windows: list[FaultWindow] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, load_started_at: float, seconds: float) -> None:
        actions: dict[str, Callable[[], FaultWindow]] = {
            WORKER_KILL: self.kill_worker,
            POSTGRES_RESTART: self.restart_postgres,
            REDIS_OUTAGE: self.stop_and_start_redis,
        }

        def run() -> None:
            for kind, share in SCHEDULE:
                if self._stop.wait(max(0.0, load_started_at + share * seconds - time.time())):
                    return
                window = actions[kind]()
                self.windows.append(window)
                log(f"fault: {kind}: {window.detail}")

        self._thread = threading.Thread(target=run, name="faults", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def kill_worker(self) -> FaultWindow:
        before = self.gunicorn.workers()
        if not before:
            now = time.time()
            return FaultWindow(WORKER_KILL, now, now, "no worker to kill", applied=False)
        victim = before[0]
        started = time.time()
        os.kill(victim, signal.SIGKILL)
        # The master notices the death and forks a replacement; the window ends when the
        # full count is back (the replacement then loads the app before it serves).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stop.is_set():
            current = self.gunicorn.workers()
            if victim not in current and len(current) == len(before):
                ended = time.time()
                replacement = sorted(set(current) - set(before))
                return FaultWindow(
                    WORKER_KILL,
                    started,
                    ended,
                    f"worker {victim} killed (SIGKILL); the master replaced it with {replacement} "
                    f"in {ended - started:.1f} s",
                    applied=True,
                )
            time.sleep(0.05)
        return FaultWindow(WORKER_KILL, started, time.time(), f"worker {victim} was not replaced", applied=False)

    def restart_postgres(self) -> FaultWindow:
        started = time.time()
        try:
            self.postgres.restart(self.pg_mode)
        except (ServiceError, OSError) as error:
            return FaultWindow(POSTGRES_RESTART, started, time.time(), f"restart failed: {error}", applied=False)
        ended = time.time()
        return FaultWindow(
            POSTGRES_RESTART,
            started,
            ended,
            f"pg_ctl restart -m {self.pg_mode}: down for {ended - started:.1f} s",
            applied=True,
        )

    def stop_and_start_redis(self) -> FaultWindow:
        started = time.time()
        self.redis.stop()
        self._stop.wait(self.redis_outage)
        try:
            self.redis.start()
        except ServiceError as error:
            return FaultWindow(REDIS_OUTAGE, started, time.time(), f"restart failed: {error}", applied=False)
        ended = time.time()
        return FaultWindow(
            REDIS_OUTAGE, started, ended, f"redis-server stopped and started again after {ended - started:.1f} s", True
        )
