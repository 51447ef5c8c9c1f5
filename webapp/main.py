"""The landing page and the health check."""

from flask import Blueprint, jsonify, render_template

from .extensions import db

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/healthz")
def healthz():
    # One round trip on a pooled connection, without an ORM session to set up and tear
    # down: a health check is polled often. A database error propagates to the 503
    # handler in errors.py.
    with db.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    return jsonify(status="ok")
