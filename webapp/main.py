"""The landing page and the health check."""

from flask import Blueprint, jsonify, render_template
from sqlalchemy import text

from .extensions import db

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/healthz")
def healthz():
    # A database error propagates to the 503 handler in errors.py.
    db.session.execute(text("SELECT 1"))
    return jsonify(status="ok")
