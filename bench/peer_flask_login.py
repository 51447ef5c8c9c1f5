"""Flask-Login over Flask-Session, as their documentation builds a server-side session sign-in.

Flask-Login 0.6 ("Configuring your Application", "How it Works", "Login Example",
"Protecting Views"): a `LoginManager` with `login_view`, a `user_loader` reading the user
from SQLite (Flask-SQLAlchemy), `login_user` at sign-in, `logout_user` at sign-out,
`@login_required` on `/account`. Its defaults stay: `session_protection = "basic"` (each
request compares a hash of the client's address and User-Agent with the session's) and
no remember-me cookie.

Flask-Session 0.8 ("Quickstart", "Configuration example", "Storage configuration",
"Security"): `Session(app)` with SESSION_TYPE "sqlalchemy" (SESSION_SQLALCHEMY, the app's
Flask-SQLAlchemy instance over SQLite) or, as a second variant, "redis" (SESSION_REDIS, a
`redis.Redis` from a URL, and a key prefix of the bench's own). Settings chosen, and why:
- The "Security" section's production settings: SESSION_COOKIE_SECURE on, a `__Host-`
  cookie name, SESSION_COOKIE_SAMESITE "Lax"; and `session_interface.regenerate(session)`
  at sign-in against session fixation.
- Everything else at its documented default, since no section says production should
  change it: SESSION_PERMANENT (31 days, PERMANENT_SESSION_LIFETIME) and Flask's
  SESSION_REFRESH_EACH_REQUEST, so every request writes the session back to its store and
  sets the cookie again with a new expiry (by design: the steady state sets a cookie);
  msgpack serialization; no SESSION_CLEANUP_N_REQUESTS (the docs prefer the
  `flask session_cleanup` command on a schedule for SQL stores).
CSRF: neither library has it, and our pages sign out with a form; Flask-WTF's
`CSRFProtect` (its "CSRF Protection" page) is what a Flask engineer adds, as ours uses
Flask-WTF too. Its `csrf_token()` keeps the secret in the (server-side) session.
Passwords: werkzeug.security, as Flask's tutorial ("Blueprints and Views").

Per signed-in request to `/account`: Flask-Session reads the session by the cookie's id
(SQLAlchemy: one SELECT, which also checks the expiry; Redis: one GET) and decodes it;
Flask-Login's session protection hashes address and User-Agent; the `user_loader` SELECTs
the user; the page (bench/account_page.py), with the email, the sign-in time the login
view kept in the session, and the idle end PERMANENT_SESSION_LIFETIME from now (no
absolute end); `csrf_token()` signs the session's secret (itsdangerous); then Flask-Session
writes the session back (SQLAlchemy: SELECT, UPDATE, COMMIT; Redis: SET with expiry) and
sets the cookie.

SQLite gets the same connection settings as ours (WAL, synchronous=NORMAL, a busy
timeout): importing webapp.database registers its listener that sets them on every
engine's connections, so the comparison is about the libraries, not the journal.

gunicorn serves it as `bench.peer_flask_login:create_app()`, with PEER_DATABASE_URL,
PEER_SESSION_TYPE ("sqlalchemy" or "redis"), for Redis PEER_REDIS_URL and
PEER_SESSION_KEY_PREFIX, and SECRET_KEY in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from flask import Blueprint, Flask, current_app, redirect, render_template_string, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_session import Session
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect, generate_csrf
from redis import Redis
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

# Imported for its side effect, our SQLite connection settings (see the docstring).
from webapp import database as _our_sqlite_settings  # noqa: F401

from .account_page import (
    STATIC,
    TEMPLATES,
    PageTimes,
    add_stub_endpoints,
    render_account_page,
    stored_activity,
    stub_main_blueprint,
)

LOGIN_PATH = "/auth/login"
SESSION_TYPES = ("sqlalchemy", "redis")
# Where the login view keeps the sign-in time for the page: Flask-Login records none.
SIGNED_IN_AT = "signed_in_at"

db = SQLAlchemy()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
csrf = CSRFProtect()


class User(UserMixin, db.Model):
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(320), nullable=False, unique=True)
    password_hash = db.Column(db.String(256), nullable=False)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


LOGIN_FORM = """<!doctype html><title>Sign in</title>
<form method="post"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input name="email" type="email"><input name="password" type="password"><button>Sign in</button></form>"""

auth = Blueprint("auth", __name__, url_prefix="/auth")


@auth.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return render_template_string(LOGIN_FORM)
    user = db.session.execute(db.select(User).filter_by(email=request.form.get("email", ""))).scalar_one_or_none()
    if user is None or not check_password_hash(user.password_hash, request.form.get("password", "")):
        return render_template_string(LOGIN_FORM), 401
    login_user(user)
    session[SIGNED_IN_AT] = int(datetime.now(timezone.utc).timestamp())
    # Flask-Session's "Security" section: a new session id at sign-in.
    current_app.session_interface.regenerate(session)
    return redirect(url_for("account.profile"))


@auth.post("/logout")
@login_required
def logout() -> Response:
    logout_user()
    return redirect(url_for("auth.login"))


account = add_stub_endpoints(Blueprint("account", __name__, url_prefix="/account"), ["sessions", "password"])
# Recorded when the app starts, as if the account's history led up to then.
ACTIVITY = stored_activity(datetime.now(timezone.utc))


@account.get("")
@login_required
def profile() -> str:
    now = datetime.now(timezone.utc)
    idle_expires_at = now + current_app.permanent_session_lifetime
    times = PageTimes(
        signed_in_at=datetime.fromtimestamp(session[SIGNED_IN_AT], timezone.utc),
        idle_expires_at=idle_expires_at,
        expires_at=idle_expires_at,
        persistent=session.permanent,
    )
    return render_account_page(
        signed_in=current_user, csrf_token=generate_csrf, times=times, activity=ACTIVITY, now=now
    )


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    environ = os.environ if environ is None else environ
    session_type = environ["PEER_SESSION_TYPE"]
    if session_type not in SESSION_TYPES:
        raise ValueError(f"PEER_SESSION_TYPE must be one of {SESSION_TYPES} (got {session_type!r})")
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC))
    app.config.update(
        SECRET_KEY=environ["SECRET_KEY"],
        SQLALCHEMY_DATABASE_URI=environ["PEER_DATABASE_URL"],
        SESSION_TYPE=session_type,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_NAME="__Host-session",
        SESSION_COOKIE_SAMESITE="Lax",
    )
    db.init_app(app)
    if session_type == "sqlalchemy":
        app.config["SESSION_SQLALCHEMY"] = db
    else:
        app.config["SESSION_REDIS"] = Redis.from_url(environ["PEER_REDIS_URL"])
        app.config["SESSION_KEY_PREFIX"] = environ["PEER_SESSION_KEY_PREFIX"]
    Session(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    app.register_blueprint(auth)
    app.register_blueprint(account)
    app.register_blueprint(stub_main_blueprint())
    return app


def create_database(app: Flask, emails: Sequence[str], password_hash: str) -> None:
    """The tables (Flask-Session's too, for SQLAlchemy), and users with these emails and
    this (werkzeug) password hash."""
    with app.app_context():
        db.create_all()
        db.session.add_all(User(email=email, password_hash=password_hash) for email in emails)
        db.session.commit()
        db.engine.dispose()
