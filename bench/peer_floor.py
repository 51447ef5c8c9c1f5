"""The floor: our `/account` template rendered by a bare Flask app with no authentication.

Flask's own docs only: an application factory ("Application Factories"), blueprints
named like ours so the template's `url_for` calls resolve ("Blueprints and Views"; the
endpoints this app does not have are 404 stubs, see bench/account_page.py), and
`render_template` ("Templates"). No database, no cookie read or set, no extension.

Per request: Flask's routing and request context, then the page as every side builds it
(bench/account_page.py): the device line from the request's User-Agent, the times (fixed
at start-up, as if the browser signed in then), the five fixed activity rows formatted
like ours, and the template. `signed_in` is a constant user and `csrf_token()` a constant
token: what the template needs, at no cost. Whatever ours spends beyond this page is the
price of its authentication.

gunicorn serves it as `bench.peer_floor:create_app()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import Blueprint, Flask

from .account_page import (
    STATIC,
    TEMPLATES,
    PageTimes,
    add_stub_endpoints,
    render_account_page,
    stored_activity,
    stub_main_blueprint,
)

FLOOR_EMAIL = "floor@example.com"
# Ours sends a Flask-WTF token of this length; the page weighs the same.
FLOOR_CSRF_TOKEN = "f" * 91
# Our production defaults (REFRESH_TOKEN_TTL, SESSION_MAX_AGE), for the times the page shows.
IDLE_LIFETIME = timedelta(days=7)
MAX_AGE = timedelta(days=30)


@dataclass(frozen=True)
class FloorUser:
    email: str


def create_app() -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC))
    started = datetime.now(timezone.utc)
    activity = stored_activity(started)
    user = FloorUser(FLOOR_EMAIL)

    account = Blueprint("account", __name__, url_prefix="/account")

    @account.get("")
    def profile() -> str:
        now = datetime.now(timezone.utc)
        times = PageTimes(
            signed_in_at=started, idle_expires_at=now + IDLE_LIFETIME, expires_at=started + MAX_AGE, persistent=False
        )
        return render_account_page(
            signed_in=user, csrf_token=lambda: FLOOR_CSRF_TOKEN, times=times, activity=activity, now=now
        )

    app.register_blueprint(add_stub_endpoints(account, ["sessions", "password"]))
    app.register_blueprint(add_stub_endpoints(Blueprint("auth", __name__, url_prefix="/auth"), ["logout"]))
    app.register_blueprint(stub_main_blueprint())
    return app
