"""JSON endpoints under /api/: 401 JSON instead of a redirect when signed out."""

from flask import Blueprint, g, jsonify

from ..auth.hooks import login_required

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/me")
@login_required
def me():
    return jsonify(email=g.signed_in.email, session_id=g.signed_in.session_id)
