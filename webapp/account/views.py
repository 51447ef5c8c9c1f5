"""The signed-in user's own pages."""

from flask import Blueprint, g, render_template

from ..auth.hooks import login_required

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("")
@login_required
def profile():
    return render_template("account/profile.html", signed_in=g.signed_in)
