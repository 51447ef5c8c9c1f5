"""What operators count: Prometheus metrics of sign-ins, rotations and revocations.

Counted at the edge, from what the engine returned or committed; the engine itself knows
nothing of this. Every app has its own `Metrics` (tests make many apps in one process).

Under gunicorn each worker is a process of its own. gunicorn.conf.py then sets
`PROMETHEUS_MULTIPROC_DIR` before any worker imports prometheus_client, so every worker
writes its counts to files there and a scrape, answered by whichever worker, adds them
all up (prometheus_client's multiprocess mode). Elsewhere (`flask run`, the tests) the
counts are the process's own.

`GET /metrics` answers only when `METRICS_TOKEN` is set, and only to
`Authorization: Bearer <METRICS_TOKEN>`: counts of sign-ins and refusals are nobody
else's business. Without the setting the address does not exist (404).
"""

from __future__ import annotations

import enum
import hmac
import os

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .security_events import EventKind
from .sessions import EndReason, IssuedTokens

bp = Blueprint("metrics", __name__)


class SignInOutcome(enum.StrEnum):
    """How a sign-in went (the form, or the API's token endpoint; a registration that
    signs its new account in counts as OK too; confirming a password does not count)."""

    OK = "ok"
    # A wrong password or an unknown address.
    FAILED = "failed"
    # Refused before the password was checked: too many attempts (429).
    LIMITED = "limited"
    # No password-check slot free in time (503).
    BUSY = "busy"


# The security events that end sessions, and the reason those sessions carry: each such
# event counts once as a revocation, however many sessions it ended.
REVOCATION_REASONS: dict[EventKind, EndReason] = {
    EventKind.SIGNED_OUT: EndReason.SIGNED_OUT,
    EventKind.SESSION_REVOKED: EndReason.REVOKED_BY_USER,
    EventKind.OTHER_SESSIONS_REVOKED: EndReason.REVOKED_BY_USER,
    EventKind.SIGNED_OUT_EVERYWHERE: EndReason.SIGNED_OUT_BY_USER,
    EventKind.PASSWORD_CHANGED: EndReason.PASSWORD_CHANGED,
    EventKind.PASSWORD_RESET: EndReason.PASSWORD_CHANGED,
    EventKind.REFRESH_TOKEN_REUSED: EndReason.REUSE,
    EventKind.SESSION_LIMIT_REACHED: EndReason.SESSION_LIMIT,
    EventKind.ACCOUNT_DISABLED: EndReason.ACCOUNT_DISABLED,
    EventKind.ALL_SESSIONS_REVOKED: EndReason.SIGNED_OUT_BY_OPERATOR,
}

# The auth hook is a JWT check and one indexed read (well under a millisecond), or a
# rotation (a write and a commit): buckets from 250 us to a second.
AUTH_HOOK_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """One app's counters and its histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.sign_ins = Counter("webapp_sign_ins", "Sign-in attempts, by outcome.", ["outcome"], registry=registry)
        self.rotations = Counter(
            "webapp_rotations", "Refresh tokens rotated (the session's counter moved).", registry=registry
        )
        self.grace_answers = Counter(
            "webapp_grace_answers",
            "Refresh tokens answered without rotating: a parallel request of the same page "
            "rotated first, or a lost rotation was sent again.",
            registry=registry,
        )
        self.reuse_detections = Counter(
            "webapp_refresh_reuse_detections",
            "Retired refresh tokens presented again: each ended its session.",
            registry=registry,
        )
        self.revocations = Counter(
            "webapp_revocations",
            "Actions that ended sessions, by the reason the sessions carry (an action that ended "
            "several sessions counts once).",
            ["reason"],
            registry=registry,
        )
        self.security_events = Counter(
            "webapp_security_events", "Security events recorded, by kind.", ["kind"], registry=registry
        )
        self.dbsc_registrations = Counter(
            "webapp_dbsc_registrations",
            "Device-bound session registrations, by outcome (bound, refused).",
            ["outcome"],
            registry=registry,
        )
        self.dbsc_refreshes = Counter(
            "webapp_dbsc_refreshes",
            "Device-bound session refresh requests, by outcome (challenged, renewed, refused).",
            ["outcome"],
            registry=registry,
        )
        self.responses = Counter("webapp_http_responses", "Responses, by status code.", ["status"], registry=registry)
        self.auth_hook_seconds = Histogram(
            "webapp_auth_hook_seconds",
            "Time the before-request authentication takes (a rotation included).",
            buckets=AUTH_HOOK_BUCKETS,
            registry=registry,
        )

    def sign_in(self, outcome: SignInOutcome) -> None:
        self.sign_ins.labels(outcome.value).inc()

    def refresh_answered(self, issued: IssuedTokens) -> None:
        """A refresh token was accepted: a rotation, or an answer that did not rotate."""
        (self.rotations if issued.rotated else self.grace_answers).inc()

    def security_event(self, kind: str) -> None:
        """A security event was committed: counted by kind, and as what it did."""
        self.security_events.labels(kind).inc()
        try:
            event = EventKind(kind)
        except ValueError:
            return
        if event is EventKind.SIGNED_IN:
            self.sign_in(SignInOutcome.OK)
        if event is EventKind.REFRESH_TOKEN_REUSED:
            self.reuse_detections.inc()
        reason = REVOCATION_REASONS.get(event)
        if reason is not None:
            self.revocations.labels(reason.value).inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's counts in multiprocess mode, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def init_app(app: Flask) -> None:
    app.extensions["metrics"] = Metrics()
    app.register_blueprint(bp)


def current_metrics() -> Metrics:
    return current_app.extensions["metrics"]


@bp.get("/metrics")
def scrape():
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        abort(404)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        response = Response("A metrics token is required.\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = Response(current_metrics().exposition(), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
