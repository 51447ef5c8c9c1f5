"""Pruning at the edges: `flask prune` and the opportunistic batch at sign-in.

Both read the retention settings here and call the engine's `prune_sessions` and
`prune_security_events`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from . import sessions
from .extensions import db

log = logging.getLogger(__name__)

# Small deployments forget cron: sign-in prunes this much, at most once an hour per process.
OPPORTUNISTIC_INTERVAL = timedelta(hours=1)
OPPORTUNISTIC_BATCH_SIZE = 200


@dataclass(frozen=True)
class Pruned:
    sessions: int
    security_events: int


def prune(*, now: datetime, batch_size: int = sessions.PRUNE_BATCH_SIZE, max_batches: int | None = None) -> Pruned:
    """Delete what the retention settings say has been kept long enough."""
    config = current_app.config
    return Pruned(
        sessions=sessions.prune_sessions(
            db.session,
            now=now,
            older_than=timedelta(days=config["PRUNE_AFTER_DAYS"]),
            batch_size=batch_size,
            max_batches=max_batches,
        ),
        security_events=sessions.prune_security_events(
            db.session,
            now=now,
            older_than=timedelta(days=config["SECURITY_EVENT_RETENTION_DAYS"]),
            batch_size=batch_size,
            max_batches=max_batches,
        ),
    )


def prune_if_due(now: datetime) -> Pruned | None:
    """One small batch, when this process has not pruned within the last hour."""
    schedule = current_app.extensions.setdefault("prune_schedule", sessions.PruneSchedule(OPPORTUNISTIC_INTERVAL))
    if not schedule.claim(now):
        return None
    try:
        return prune(now=now, batch_size=OPPORTUNISTIC_BATCH_SIZE, max_batches=1)
    except SQLAlchemyError as error:
        # Housekeeping must never cost anybody their sign-in; `flask prune` will catch up.
        log.warning("opportunistic prune failed: %s", error)
        db.session.rollback()
        return None
