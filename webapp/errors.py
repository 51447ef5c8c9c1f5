"""Error pages and JSON errors. Nothing a client sends should end in a 500.

Under /api/ every error is JSON `{"error": ...}`; elsewhere it is a page. A database
outage is a 503 that leaves the visitor's cookies alone: an outage of ours must never
sign anybody out.
"""

from __future__ import annotations

import logging
import math

from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from .extensions import db

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Too large",
    415: "Unsupported media type",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


# Outside /api/, the two addresses that scripts and probes call rather than people.
_JSON_PATHS = frozenset({"/auth/refresh", "/healthz"})


def wants_json() -> bool:
    """Whether this request is answered in JSON (errors and refusals included) rather
    than with a page: everything under /api/, the page scripts' refresh, the health check."""
    return request.path.startswith("/api/") or request.path in _JSON_PATHS


def wait_in_words(seconds: int) -> str:
    """How long until a retry, as a person says it: "in 40 seconds", "in 12 minutes"."""
    if seconds < 60:
        return f"in {seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"in {minutes} minute{'s' if minutes != 1 else ''}"
    return f"in {math.ceil(minutes / 60)} hours"


def error_response(status: int, message: str, *, code: str | None = None, **details: str) -> Response:
    """A page, or under /api/ and for scripts `{"error": code, "message": ..., **details}`."""
    title = TITLES.get(status, "Error")
    if wants_json():
        response = jsonify(error=code or title.lower().replace(" ", "_"), message=message, **details)
    else:
        response = make_response(render_template("error.html", status=status, title=title, message=message))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    # Registered after Flask-SQLAlchemy's own teardown, so it runs first (Flask runs
    # teardowns last-registered first) and leaves that one nothing to do.
    app.teardown_appcontext(put_the_database_session_away)

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> Response:
        return error_response(
            400,
            "This form has expired or was not sent by this site. Go back, reload the page and try again.",
            code="csrf_failed",
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code is None:
            return error
        headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
        message = error.description or TITLES.get(error.code, "Error")
        retry_after = dict((name.lower(), value) for name, value in headers).get("retry-after")
        if retry_after is not None and retry_after.isdigit():
            # "Wait a few minutes" is not an answer: say how long.
            message = f"{message} You can try again {wait_in_words(int(retry_after))}."
        response = error_response(error.code, message)
        # Keep what the exception says in headers: Retry-After, Allow.
        for name, value in headers:
            response.headers[name] = value
        return response

    @app.errorhandler(DataError)
    def data_refused_by_the_database(error: DataError) -> Response:
        # A value the database cannot hold (PostgreSQL: a NUL byte in text, a number out
        # of range) came from the client: a bad request, never a 500.
        log.info("value refused by the database: %s", error.orig)
        db.session.rollback()
        return error_response(
            400, "The request contains characters or values that cannot be stored.", code="bad_request"
        )

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(error: Exception) -> Response:
        log.warning("database unavailable: %s", error)
        try:
            db.session.rollback()
        except DBAPIError:
            pass  # the connection is gone; the pool discards it
        response = error_response(
            503, "The service is briefly unavailable. Please try again in a moment.", code="unavailable"
        )
        response.headers["Retry-After"] = "5"
        return response


def put_the_database_session_away(exception: BaseException | None) -> None:
    """At the end of every request: close the ORM session, as Flask-SQLAlchemy does, but
    without failing the request when the database went away after its last query (a
    server restart between the view and the closing rollback). The answer is made by
    then; a 500 now would be an outage of ours shown as a crash. The connection the
    rollback failed on is thrown away, and the next request gets a fresh one."""
    if not db.session.registry.has():
        return  # this request used no ORM session: there is nothing to close (and none to make)
    session, connection = db.session(), None
    try:
        if session.in_transaction():
            # Taken before closing: a failed close has already let go of its transaction.
            connection = session.connection()
        session.close()
    except DBAPIError as error:
        if error.connection_invalidated:
            log.warning("database connection lost at the end of a request: %s", error)
        else:
            log.error("rollback failed at the end of a request: %s", error)
        if connection is not None:
            connection.invalidate()
            connection.close()
    finally:
        db.session.remove()
