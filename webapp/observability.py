"""What the app tells its operators about each request and each security event.

- Every response is counted by status (`webapp_http_responses`: the 429s and 503s among
  them), and the auth hook's time goes to a histogram (webapp/metrics.py).
- Every security event, once committed, is counted (sign-ins, reuse detections,
  revocations by reason) and logged on `webapp.security`: whatever records one, the
  engine's `record_event` adds it to the unit of work, and a listener on the ORM session
  sees it commit (a rolled-back event never happened, so it is neither counted nor logged).
- With `LOG_FORMAT=json`, every log line of the app and of the libraries it uses (the
  connection pool, the rate limits) is one JSON object, and every request adds one on `webapp.request`: method,
  the route's pattern (`/auth/reset/<token>`; for a path that matched no route, the path
  without its query and with any recovery-link token cut out), status, duration, a hash
  of the session's public id, the user id, and the request id, taken from `X-Request-ID`
  when it is a sane one and made up otherwise, and sent back in `X-Request-ID`. No line
  holds a token, a password or an email address; development's stand-in for an SMTP
  server (webapp/mail.py) is the exception: it logs each email whole, by design.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import Flask, Response, current_app, g, has_app_context, has_request_context, request
from flask.logging import default_handler
from sqlalchemy import event

from .auth.request_auth import current_auth
from .extensions import db
from .metrics import current_metrics
from .models import SecurityEvent
from .redaction import redact_link_tokens

request_log = logging.getLogger("webapp.request")
security_log = logging.getLogger("webapp.security")

# An incoming request id is kept only if it could not smuggle anything into a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def init_app(app: Flask) -> None:
    """Register the request hooks (before everything else, so the duration covers it all,
    and after everything else, so the status is the final one) and the log format."""
    json_logs = app.config["LOG_FORMAT"] == "json"
    use_log_format(app.logger, json_lines=json_logs)
    if json_logs:
        app.before_request(start_request_log)
    # After-request functions run last-registered first: this one, registered before the
    # auth pipeline's, sees the response as it leaves.
    app.after_request(log_request if json_logs else count_response)
    _listen_for_security_events()


def loggable_path() -> str:
    """This request's path as a log may hold it: the route's pattern when one matched
    (`/auth/reset/<token>`, `/account/sessions/<session_id>/revoke`: no token, no id),
    else the path with any recovery-link token cut out."""
    rule = request.url_rule
    return rule.rule if rule is not None else redact_link_tokens(request.path)


def session_hash(public_id: str | None) -> str | None:
    """A stable stand-in for a session's public id in logs: lines of one session can be
    followed, and the id (which a forged request could aim at) is not written down."""
    if public_id is None:
        return None
    return hashlib.sha256(public_id.encode()).hexdigest()[:16]


# --- requests -------------------------------------------------------------------------------


def start_request_log() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def count_response(response: Response) -> Response:
    current_metrics().responses.labels(str(response.status_code)).inc()
    return response


def log_request(response: Response) -> Response:
    count_response(response)
    started = g.get("request_started")
    signed_in = current_auth().signed_in
    path = loggable_path()
    request_log.info(
        "%s %s %s",
        request.method,
        path,
        response.status_code,
        extra={
            "fields": {
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": None if started is None else round((time.perf_counter() - started) * 1000, 2),
                "session": session_hash(signed_in.session_id) if signed_in else None,
                "user_id": signed_in.user_id if signed_in else None,
            }
        },
    )
    if "request_id" in g:
        response.headers["X-Request-ID"] = g.request_id
    return response


# --- security events ------------------------------------------------------------------------

_PENDING = "security_events_pending"


def _listen_for_security_events() -> None:
    # On the ORM session factory Flask-SQLAlchemy shares between apps: once per process.
    if not event.contains(db.session, "after_flush", _collect_flushed_events):
        event.listen(db.session, "after_flush", _collect_flushed_events)
        event.listen(db.session, "after_commit", _report_committed_events)
        event.listen(db.session, "after_rollback", _forget_events)


def _collect_flushed_events(session, flush_context) -> None:
    # `session.new` still lists what this flush inserted.
    flushed = [item for item in session.new if isinstance(item, SecurityEvent)]
    if flushed:
        session.info.setdefault(_PENDING, []).extend(flushed)


def _forget_events(session) -> None:
    session.info.pop(_PENDING, None)


def _report_committed_events(session) -> None:
    committed = session.info.pop(_PENDING, None)
    if not committed or not has_app_context() or "metrics" not in current_app.extensions:
        return
    metrics = current_metrics()
    request_id = g.get("request_id") if has_request_context() else None
    for security_event in committed:
        metrics.security_event(security_event.kind)
        security_log.info(
            "security event %s: user %s, session %s",
            security_event.kind,
            security_event.user_id,
            session_hash(security_event.session_public_id) or "none",
            extra={
                "fields": {
                    "event": security_event.kind,
                    "user_id": security_event.user_id,
                    "session": session_hash(security_event.session_public_id),
                    "ip_address": security_event.ip_address or None,
                    "request_id": request_id,
                }
            },
        )


# --- JSON lines -----------------------------------------------------------------------------


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's `fields`
    (given as `extra={"fields": {...}}`), plus the request id inside a request."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if "request_id" not in line and has_request_context() and "request_id" in g:
            line["request_id"] = g.request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class JsonLogHandler(logging.StreamHandler):
    """Standard error, as JSON lines (a class of its own, so a second app in the same
    process replaces it rather than adding another)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonLogFormatter())


def use_log_format(app_logger: logging.Logger, *, json_lines: bool) -> None:
    """JSON lines: one handler, on the root logger, for the app's lines and for those of
    the libraries beneath it (the pool's "Exception during reset" when a database server
    restarts, the rate limits' outage warning), which would otherwise reach standard error
    as plain text; Flask's own handler comes off the app's logger, whose lines go up to
    it. Text: Flask's handler, as Flask sets it up. Both loggers are the process's, so an
    app made after another puts back what it needs."""
    root = logging.getLogger()
    had_json = False
    for handler in list(root.handlers):
        if isinstance(handler, JsonLogHandler):
            root.removeHandler(handler)
            had_json = True
    # The development server's own request lines hold whole paths, recovery-link tokens
    # included: with JSON lines, ours (one per request, route patterns) stand in for them.
    development_server = logging.getLogger("werkzeug")
    if json_lines:
        app_logger.removeHandler(default_handler)
        root.addHandler(JsonLogHandler())
        development_server.setLevel(logging.WARNING)
    elif had_json:
        development_server.setLevel(logging.NOTSET)
        if default_handler not in app_logger.handlers:
            app_logger.addHandler(default_handler)
