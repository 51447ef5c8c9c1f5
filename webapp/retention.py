"""Retention: deleting ended sessions and old security events, a batch at a time.

`flask prune` runs `prune` with no limit; a sign-in runs one small batch at most once an
hour per process (`PruneSchedule`), because small deployments forget cron. No Flask
here: the edge passes the settings in (`RetentionPolicy.from_config`).

Unlike the rest of the engine, pruning commits, once per batch: it is always a unit of
work of its own, and a DELETE of millions of rows in one transaction would hold the
table's locks for minutes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession

from .models import SecurityEvent, Session

__all__ = [
    "PRUNE_BATCH_SIZE",
    "PruneSchedule",
    "Pruned",
    "RetentionPolicy",
    "prune",
    "prune_if_due",
    "prune_security_events",
    "prune_sessions",
]

log = logging.getLogger(__name__)

PRUNE_BATCH_SIZE = 5_000
# What a sign-in prunes, at most once an hour per process.
OPPORTUNISTIC_INTERVAL = timedelta(hours=1)
OPPORTUNISTIC_BATCH_SIZE = 200


@dataclass(frozen=True)
class RetentionPolicy:
    """How long ended sessions and security events are kept."""

    sessions_for: timedelta
    security_events_for: timedelta

    @classmethod
    def from_config(cls, config: Mapping) -> RetentionPolicy:
        return cls(
            sessions_for=timedelta(days=config["PRUNE_AFTER_DAYS"]),
            security_events_for=timedelta(days=config["SECURITY_EVENT_RETENTION_DAYS"]),
        )


@dataclass(frozen=True)
class Pruned:
    sessions: int
    security_events: int


def _delete_in_batches(db_session: DbSession, model, condition, *, batch_size: int, max_batches: int | None) -> int:
    # Each DELETE takes at most `batch_size` rows found through an index and commits, so
    # a table of millions of rows is never locked for long and sign-ins go on meanwhile.
    removed, batches = 0, 0
    while max_batches is None or batches < max_batches:
        batch = select(model.id).where(condition).limit(batch_size)
        deleted = db_session.execute(
            delete(model).where(model.id.in_(batch.scalar_subquery())).execution_options(synchronize_session=False)
        ).rowcount
        db_session.commit()
        removed += deleted
        batches += 1
        if deleted < batch_size:
            break
    return removed


def prune_sessions(
    db_session: DbSession,
    *,
    now: datetime,
    older_than: timedelta,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> int:
    """Delete sessions that were revoked, went idle, or reached their absolute end more
    than `older_than` before `now`; active sessions are never touched. Works in batches
    of `batch_size` rows (at most `max_batches` per condition, None for all), committing
    after each. Returns how many rows were deleted. Raises nothing of its own."""
    cutoff = now - older_than
    return sum(
        _delete_in_batches(db_session, Session, column < cutoff, batch_size=batch_size, max_batches=max_batches)
        # One condition at a time, each a range scan of its own index.
        for column in (Session.revoked_at, Session.idle_expires_at, Session.expires_at)
    )


def prune_security_events(
    db_session: DbSession,
    *,
    now: datetime,
    older_than: timedelta,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> int:
    """Delete security events recorded more than `older_than` before `now`, in batches as
    `prune_sessions` does. Returns how many rows were deleted. Raises nothing of its own."""
    return _delete_in_batches(
        db_session,
        SecurityEvent,
        SecurityEvent.created_at < now - older_than,
        batch_size=batch_size,
        max_batches=max_batches,
    )


def prune(
    db_session: DbSession,
    policy: RetentionPolicy,
    *,
    now: datetime,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> Pruned:
    """Delete what `policy` says has been kept long enough. Commits after each batch."""
    return Pruned(
        sessions=prune_sessions(
            db_session, now=now, older_than=policy.sessions_for, batch_size=batch_size, max_batches=max_batches
        ),
        security_events=prune_security_events(
            db_session, now=now, older_than=policy.security_events_for, batch_size=batch_size, max_batches=max_batches
        ),
    )


class PruneSchedule:
    """Decides when opportunistic pruning is due: at most once per `interval` in this
    process, so small deployments that forget the cron job still stay tidy without
    every sign-in paying for a DELETE. Thread-safe; takes `now` like the engine does."""

    def __init__(self, interval: timedelta = OPPORTUNISTIC_INTERVAL):
        self.interval = interval
        self._next_due: datetime | None = None
        self._lock = threading.Lock()

    def claim(self, now: datetime) -> bool:
        """True for exactly one caller per interval; that caller should prune now."""
        with self._lock:
            if self._next_due is not None and now < self._next_due:
                return False
            self._next_due = now + self.interval
            return True


def prune_if_due(
    db_session: DbSession, policy: RetentionPolicy, schedule: PruneSchedule, *, now: datetime
) -> Pruned | None:
    """One small batch of each kind, when `schedule` says this process is due; None when
    it is not, or when the database refused (logged: `flask prune` will catch up).
    Call it after the caller's own unit of work has committed."""
    if not schedule.claim(now):
        return None
    try:
        return prune(db_session, policy, now=now, batch_size=OPPORTUNISTIC_BATCH_SIZE, max_batches=1)
    except SQLAlchemyError as error:
        # Housekeeping must never cost anybody their sign-in.
        log.warning("opportunistic prune failed: %s", error)
        db_session.rollback()
        return None
