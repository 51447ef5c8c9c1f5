"""Sign-in, refresh and revocation for clients that are not browsers.

JSON in, JSON out; tokens travel in the body and `Authorization: Bearer`, never in
cookies, so none is read or set here and CSRF does not apply. The sessions are the
engine's sessions: same rotation, reuse detection, lifetimes and revocation, and they
appear on the sessions page under the name the client gave.
"""

from __future__ import annotations

import unicodedata

from flask import Blueprint, current_app, jsonify, request

from .. import accounts, notices, sessions
from ..auth.hooks import current_device, current_policy, current_time
from ..auth.ratelimit import note_failed_sign_in, sign_in_attempt
from ..database import unit_of_work
from ..extensions import db
from ..metrics import SignInOutcome, current_metrics
from ..passwords import MAX_LENGTH
from ..sessions import IssuedTokens

# No CSRF check here (auth/csrf.py): these endpoints read credentials from the body only.
bp = Blueprint("api_tokens", __name__, url_prefix="/api/auth")

MAX_CLIENT_NAME = 100
DEFAULT_CLIENT_NAME = "API client"


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@bp.errorhandler(BadRequest)
def bad_request(error: BadRequest):
    return no_store(jsonify(error=error.error, message=error.message)), error.status


def no_store(response):
    # RFC 6749 section 5.1: responses carrying tokens must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def json_body(*required: str) -> dict[str, str]:
    """The request's JSON object, with `required` string fields present."""
    if not request.is_json:
        raise BadRequest(415, "unsupported_media_type", "Send Content-Type: application/json.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest(400, "invalid_request", "The body must be a JSON object.")
    for name in required:
        if not isinstance(body.get(name), str) or not body[name]:
            raise BadRequest(400, "invalid_request", f"'{name}' must be a non-empty string.")
    for name, value in body.items():
        # JSON can spell lone surrogates ("\ud800"), which no database accepts.
        if isinstance(value, str) and not accounts.encodes_as_utf8(value):
            raise BadRequest(400, "invalid_request", f"'{name}' is not valid text.")
    return body


def readable_name(name: str) -> str:
    """A client's name as people will read it (the devices page, a new-sign-in email):
    one line, without control or format characters (an escape sequence, a right-to-left
    override that turns the text around), unassigned code points or lone surrogates."""
    return " ".join("".join(" " if unicodedata.category(char)[0] == "C" else char for char in name).split())


def invalid_grant(message: str):
    return no_store(jsonify(error="invalid_grant", message=message)), 401


def token_response(issued: IssuedTokens):
    expires_in = sessions.seconds_until(issued.access_expires_at, current_time())
    return no_store(
        jsonify(
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            token_type="Bearer",
            expires_in=expires_in,
            session_id=issued.session_id,
        )
    )


@bp.post("/token")
def token():
    # The whole body is checked before the attempt is counted: a malformed one is a 400
    # that leaves no trace in the sign-in limits' storage (auth/ratelimit.py).
    body = json_body("email", "password")
    client_name = body.get("client_name")
    if client_name is not None and not isinstance(client_name, str):
        raise BadRequest(400, "invalid_request", "'client_name' must be a string.")
    client_name = readable_name(client_name or "")[:MAX_CLIENT_NAME] or DEFAULT_CLIENT_NAME
    if len(body["email"]) > accounts.MAX_EMAIL_LENGTH or len(body["password"]) > MAX_LENGTH:
        raise BadRequest(
            400,
            "invalid_request",
            f"'email' must be at most {accounts.MAX_EMAIL_LENGTH} characters, 'password' at most {MAX_LENGTH}.",
        )
    with sign_in_attempt(body["email"], starts_session=True):
        user = accounts.check_credentials(
            db.session, body["email"], body["password"], rounds=current_app.config["BCRYPT_ROUNDS"]
        )
    if user is None:
        note_failed_sign_in()
        current_metrics().sign_in(SignInOutcome.FAILED)
        return invalid_grant("Incorrect email or password.")
    device = current_device(client_name=client_name)
    try:
        with unit_of_work(db.session):
            issued = sessions.start_session(
                db.session, user, policy=current_policy(), now=current_time(), device=device, persistent=True
            )
    except sessions.CredentialsChanged:
        # The password was reset (or the account disabled) while it was checked.
        return invalid_grant("Incorrect email or password.")
    # A client of the API keeps no device cookie: each of its sign-ins is a new device to
    # the account's owner (a client should keep its refresh token, not sign in again).
    notices.new_sign_in(user, device=device, now=current_time())
    return token_response(issued)


@bp.post("/refresh")
def refresh():
    body = json_body("refresh_token")
    with unit_of_work(db.session):
        try:
            issued = sessions.rotate_refresh_token(
                db.session, body["refresh_token"], policy=current_policy(), now=current_time()
            )
        except sessions.RefreshRejected:
            # Inside the unit of work: a reused token's revocation is committed with it.
            issued = None
    if issued is None:
        return invalid_grant("The refresh token is invalid, expired or revoked. Sign in again.")
    current_metrics().refresh_answered(issued)
    return token_response(issued)


@bp.post("/revoke")
def revoke():
    body = json_body("refresh_token")
    # RFC 7009: the answer is the same whether or not the token was valid.
    with unit_of_work(db.session):
        sessions.revoke_by_refresh_token(db.session, body["refresh_token"], policy=current_policy(), now=current_time())
    return no_store(jsonify(revoked=True))
