"""Flask-JWT-Extended, as its documentation builds a cookie-based, server-rendered sign-in.

Following the docs (4.7) section by section:
- "JWT in Cookies": `JWT_TOKEN_LOCATION = ["cookies"]`, `set_access_cookies` at sign-in,
  `unset_jwt_cookies` at sign-out, and CSRF double submit protection left on (its
  default `JWT_COOKIE_CSRF_PROTECT`). `JWT_COOKIE_SECURE` on, as the docs say production
  must; `JWT_CSRF_CHECK_FORM` on, because our pages sign out with an HTML form whose
  `csrf_token` field the template fills from the token's own `csrf` claim.
- "Implicit Refreshing With Cookies": the docs' `after_request` that re-issues the access
  cookie when the token is within 30 minutes of expiring, with their one-hour tokens.
- "Blocklist and Token Revoking", its "Database" example: a `TokenBlocklist` table
  (Flask-SQLAlchemy, SQLite), `token_in_blocklist_loader` querying it by `jti` on every
  protected request; sign-out adds the token's `jti`.
- "Automatic User Loading": `user_identity_loader` and `user_lookup_loader` reading the
  user from SQLite, so the view has `current_user`.
Passwords: werkzeug.security, as Flask's tutorial ("Blueprints and Views").

Per signed-in request to `/account`: `@jwt_required()` reads the cookie, verifies the
HS256 JWT and its claims (PyJWT), one SELECT in the blocklist, one SELECT of the user;
then the page (bench/account_page.py) with the email and the times from the token's
claims (`iat`, the sign-in or the latest implicit refresh, as "signed in"; `exp` as both
ends, since implicit refresh has no absolute limit);
then the `after_request` hook, which writes nothing until the token is 30 minutes from
expiry. A steady-state request sets no cookie.

SQLite gets the same connection settings as ours (WAL, synchronous=NORMAL, a busy
timeout): importing webapp.database registers its listener that sets them on every
engine's connections, so the comparison is about the libraries, not the journal.

gunicorn serves it as `bench.peer_jwt_extended:create_app()`, with PEER_DATABASE_URL and
SECRET_KEY in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

from flask import Blueprint, Flask, Response, redirect, render_template_string, request, url_for
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    current_user,
    get_jwt,
    jwt_required,
    set_access_cookies,
    unset_jwt_cookies,
)
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import check_password_hash

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
# "Implicit Refreshing With Cookies": tokens of an hour, renewed in their last 30 minutes.
ACCESS_EXPIRES = timedelta(hours=1)
REFRESH_WITHIN = timedelta(minutes=30)

db = SQLAlchemy()
jwt = JWTManager()


class User(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(320), nullable=False, unique=True)
    password_hash = db.Column(db.String(256), nullable=False)


# The docs' model: "Making jti an index can significantly speed up the search ... this
# query will happen for every (protected) request".
class TokenBlocklist(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    jti = db.Column(db.String(36), nullable=False, index=True)
    created_at = db.Column(db.DateTime, nullable=False)


@jwt.user_identity_loader
def user_identity_lookup(user: User) -> str:
    # The `sub` claim must be a string (JWT_VERIFY_SUB, on by default since 4.7).
    return str(user.id)


@jwt.user_lookup_loader
def user_lookup_callback(_jwt_header: dict, jwt_data: dict) -> User | None:
    identity = jwt_data["sub"]
    return User.query.filter_by(id=identity).one_or_none()


@jwt.token_in_blocklist_loader
def check_if_token_revoked(_jwt_header: dict, jwt_payload: dict) -> bool:
    jti = jwt_payload["jti"]
    token = db.session.query(TokenBlocklist.id).filter_by(jti=jti).scalar()
    return token is not None


LOGIN_FORM = """<!doctype html><title>Sign in</title>
<form method="post"><input name="email" type="email"><input name="password" type="password">
<button>Sign in</button></form>"""

auth = Blueprint("auth", __name__, url_prefix="/auth")


@auth.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return render_template_string(LOGIN_FORM)
    user = User.query.filter_by(email=request.form.get("email", "")).one_or_none()
    if user is None or not check_password_hash(user.password_hash, request.form.get("password", "")):
        return render_template_string(LOGIN_FORM), 401
    response = redirect(url_for("account.profile"))
    set_access_cookies(response, create_access_token(identity=user))
    return response


@auth.post("/logout")
@jwt_required()
def logout() -> Response:
    db.session.add(TokenBlocklist(jti=get_jwt()["jti"], created_at=datetime.now(timezone.utc)))
    db.session.commit()
    response = redirect(url_for("auth.login"))
    unset_jwt_cookies(response)
    return response


account = add_stub_endpoints(Blueprint("account", __name__, url_prefix="/account"), ["sessions", "password"])
# Recorded when the app starts, as if the account's history led up to then.
ACTIVITY = stored_activity(datetime.now(timezone.utc))


@account.get("")
@jwt_required()
def profile() -> str:
    claims = get_jwt()
    expires_at = datetime.fromtimestamp(claims["exp"], timezone.utc)
    times = PageTimes(
        signed_in_at=datetime.fromtimestamp(claims["iat"], timezone.utc),
        idle_expires_at=expires_at,
        expires_at=expires_at,
        # JWT_SESSION_COOKIE's default: the cookies end with the browser.
        persistent=False,
    )
    return render_account_page(
        signed_in=current_user,
        csrf_token=lambda: claims["csrf"],
        times=times,
        activity=ACTIVITY,
        now=datetime.now(timezone.utc),
    )


def refresh_expiring_jwts(response: Response) -> Response:
    """The docs' implicit refresh, verbatim but for the timedeltas (named above) and the
    identity: our `user_identity_loader` takes the user, so it gets `current_user`."""
    try:
        exp_timestamp = get_jwt()["exp"]
        now = datetime.now(timezone.utc)
        target_timestamp = datetime.timestamp(now + REFRESH_WITHIN)
        if target_timestamp > exp_timestamp:
            access_token = create_access_token(identity=current_user)
            set_access_cookies(response, access_token)
        return response
    except (RuntimeError, KeyError):
        # Case where there is not a valid JWT. Just return the original response
        return response


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    environ = os.environ if environ is None else environ
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC))
    app.config.update(
        SECRET_KEY=environ["SECRET_KEY"],
        JWT_SECRET_KEY=environ["SECRET_KEY"],
        JWT_TOKEN_LOCATION=["cookies"],
        JWT_ACCESS_TOKEN_EXPIRES=ACCESS_EXPIRES,
        JWT_COOKIE_SECURE=True,
        JWT_CSRF_CHECK_FORM=True,
        SQLALCHEMY_DATABASE_URI=environ["PEER_DATABASE_URL"],
    )
    db.init_app(app)
    jwt.init_app(app)
    app.after_request(refresh_expiring_jwts)
    app.register_blueprint(auth)
    app.register_blueprint(account)
    app.register_blueprint(stub_main_blueprint())
    return app


def create_database(app: Flask, emails: Sequence[str], password_hash: str) -> None:
    """The tables, and users with these emails and this (werkzeug) password hash."""
    with app.app_context():
        db.create_all()
        db.session.add_all(User(email=email, password_hash=password_hash) for email in emails)
        db.session.commit()
        db.engine.dispose()
