"""Device Bound Session Credentials over HTTP: the offer, registration and refresh.

Chrome's side of it, as observed (docs in README "Device-bound sessions"):
1. A response offers registration: `Secure-Session-Registration: (ES256 RS256);
   path="/auth/dbsc/register";challenge="..."`. We offer it on the pages of a signed-in
   browser session that is not bound yet, over HTTPS, when `DEVICE_BOUND_SESSIONS` is on.
2. The browser POSTs `Secure-Session-Response: <JWT>` (its new key in the header, our
   challenge as `jti`). We check it, store the public key on the session, and answer
   the session's description (which cookie is bound, where to refresh it, which paths it
   covers) with a fresh access cookie.
3. When the access cookie is about to expire, the browser POSTs to the refresh URL with
   `Sec-Secure-Session-Id`; we answer 403 with `Secure-Session-Challenge`; it POSTs
   again with a JWT over that challenge, signed by the stored key; we rotate the refresh
   token as usual (its cookie comes along) and set both cookies.

The before-request hook never rotates a bound session from its cookies alone
(auth/hooks.py): that is what makes a copied cookie jar stop working.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from .. import device_binding, sessions, tokens
from ..auth.cookies import access_cookie_attributes, access_cookie_name, refresh_cookie_name
from ..auth.hooks import current_policy, current_time
from ..auth.request_auth import current_auth, is_bearer_request
from ..database import unit_of_work
from ..device_binding import ChallengePurpose, InvalidProof, UnknownChallenge
from ..extensions import db
from ..metrics import current_metrics

bp = Blueprint("dbsc", __name__, url_prefix="/auth/dbsc")

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _keys() -> device_binding.ChallengeKeys:
    return current_app.extensions["dbsc_keys"]


def offered_here() -> bool:
    """Whether this request may take part in DBSC: switched on, over HTTPS, a browser."""
    return current_app.config["DEVICE_BOUND_SESSIONS"] and request.is_secure and not is_bearer_request()


def offer_registration(response: Response) -> Response:
    """After every request: the response that signs a browser in (the form, registration,
    a password change's new session) offers to bind the new session to its device. Once:
    the pages that follow, sent before the browser has registered, would each cost it a
    second signature and key. Browsers without DBSC ignore the header; binding itself is
    refused once the sign-in is minutes old (sessions.BINDING_WINDOW)."""
    issued = current_auth().issued
    signed_in = None if issued is None else issued.signed_in
    if signed_in is None or not signed_in.bindable or signed_in.client_name is not None or not offered_here():
        return response
    challenge = device_binding.make_challenge(
        ChallengePurpose.REGISTER, signed_in.session_id, state=device_binding.UNBOUND, keys=_keys(), now=current_time()
    )
    algorithms = " ".join(device_binding.ALGORITHMS)
    response.headers["Secure-Session-Registration"] = (
        f'({algorithms});path="{url_for("dbsc.register")}";challenge="{challenge}"'
    )
    return response


def session_description(session_id: str) -> dict:
    """What the browser keeps about a bound session: its id, where to refresh it, the
    paths it covers, and the cookie it keeps fresh, with that cookie's exact attributes."""
    host = urlsplit(request.host_url).hostname
    excluded = [{"type": "exclude", "domain": host, "path": path} for path in device_binding.UNBOUND_PATHS]
    return {
        "session_identifier": session_id,
        "refresh_url": url_for("dbsc.refresh"),
        "scope": {
            "include_site": False,
            "scope_specification": excluded,
        },
        "credentials": [{"type": "cookie", "name": access_cookie_name(), "attributes": access_cookie_attributes()}],
    }


@bp.after_request
def count_outcome(response: Response) -> Response:
    """For operators: how registrations and refreshes went (webapp/metrics.py)."""
    metrics = current_metrics()
    if request.endpoint == "dbsc.register":
        metrics.dbsc_registrations.labels("bound" if response.status_code == 200 else "refused").inc()
    elif request.endpoint == "dbsc.refresh":
        if response.status_code == 200:
            outcome = "renewed"
        elif "Secure-Session-Challenge" in response.headers:
            outcome = "challenged"
        else:
            outcome = "refused"
        metrics.dbsc_refreshes.labels(outcome).inc()
    return response


def _refused(status: int, message: str, code: str) -> Response:
    # JSON whatever the request accepts: the browser itself sends these, not a page.
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


@bp.post("/register")
def register():
    if not offered_here():
        return _refused(404, "Device-bound sessions are not offered here.", "not_offered")
    signed_in = current_auth().signed_in
    if signed_in is None or signed_in.client_name is not None:
        return _refused(401, "Sign in first.", "not_signed_in")
    now = current_time()

    def live_challenge(challenge: object) -> bool:
        return device_binding.challenge_is_valid(
            challenge,
            ChallengePurpose.REGISTER,
            signed_in.session_id,
            state=device_binding.UNBOUND,
            keys=_keys(),
            now=now,
        )

    try:
        public_jwk = device_binding.verify_registration(
            request.headers.get("Secure-Session-Response", "").strip(), live_challenge
        )
    except UnknownChallenge:
        return _refused(403, "The challenge is not one of ours, or has expired.", "invalid_challenge")
    except InvalidProof:
        return _refused(400, "The proof of possession is not valid.", "invalid_proof")
    auth = current_auth()
    with unit_of_work(db.session):
        bound = sessions.bind_to_device(
            db.session, signed_in.session_id, user_id=signed_in.user_id, public_jwk=public_jwk, now=now
        )
        # A fresh access cookie, which the browser keeps from now on as the bound cookie;
        # unless the hook rotated this very request, whose new cookies (both) it keeps.
        issued = auth.issued or sessions.reissue_access_token(
            db.session, signed_in.session_id, policy=current_policy(), now=now
        )
    if not bound:
        return _refused(403, "This session is bound already, or signed in too long ago to bind.", "not_bindable")
    auth.sign_in(issued)
    return jsonify(session_description(signed_in.session_id))


def _challenge(session_id: str, bound: sessions.BoundSession) -> Response:
    state = device_binding.refresh_state(bound.counter, bound.rotated_at)
    challenge = device_binding.make_challenge(
        ChallengePurpose.REFRESH, session_id, state=state, keys=_keys(), now=current_time()
    )
    response = Response(status=403)
    response.headers["Secure-Session-Challenge"] = f'"{challenge}";id="{session_id}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/refresh")
def refresh():
    # The before-request hook does not run here (auth/hooks.py): this request's expired
    # access cookie is the point, and its refresh cookie is only used below, with a proof.
    if not offered_here():
        return _refused(404, "Device-bound sessions are not offered here.", "not_offered")
    session_id = request.headers.get("Sec-Secure-Session-Id", "").strip().strip('"')
    if not _SESSION_ID.fullmatch(session_id):
        return _refused(400, "Sec-Secure-Session-Id is missing or malformed.", "invalid_request")
    now = current_time()
    bound = sessions.device_key_of(db.session, session_id, now=now)
    if bound is None:
        # Ended, or never bound: the browser stops refreshing it.
        return _refused(401, "This session has ended.", "session_expired")
    proof = request.headers.get("Secure-Session-Response", "").strip()
    if not proof:
        return _challenge(session_id, bound)
    state = device_binding.refresh_state(bound.counter, bound.rotated_at)

    def live_challenge(challenge: object) -> bool:
        return device_binding.challenge_is_valid(
            challenge, ChallengePurpose.REFRESH, session_id, state=state, keys=_keys(), now=now
        )

    try:
        device_binding.verify_refresh(proof, bound.device_key, live_challenge)
    except UnknownChallenge:
        # Stale, or answered already (the session's rotation has moved on): a new one.
        return _challenge(session_id, bound)
    except InvalidProof:
        return _refused(401, "The proof does not come from this session's device.", "invalid_proof")

    refresh_token = request.cookies.get(refresh_cookie_name(), "")
    try:
        cookie_session_id, _ = tokens.parse_refresh_token(refresh_token, keys=current_policy().keys)
    except tokens.InvalidToken:
        return _refused(401, "The sign-in cookie is missing or not valid.", "session_expired")
    if cookie_session_id != session_id:
        return _refused(403, "The sign-in cookie belongs to another session.", "session_mismatch")

    auth = current_auth()
    rejected = None
    with unit_of_work(db.session):
        try:
            issued = sessions.rotate_refresh_token(
                db.session, refresh_token, policy=current_policy(), now=now, device_proof=True
            )
        except sessions.RefreshRejected as error:
            # Inside the unit of work: a reused token's revocation is committed with it.
            issued, rejected = None, error
    if rejected is not None:
        auth.sign_out(refresh_rejected=True, reason=rejected.reason)
        return _refused(401, "This session has ended.", "session_expired")
    if not issued.new_refresh_token:
        # A parallel refresh rotated first (a grace answer): sign a challenge for where
        # the session is now, and get its refresh cookie too.
        now_bound = sessions.device_key_of(db.session, session_id, now=now)
        if now_bound is None:
            return _refused(401, "This session has ended.", "session_expired")
        return _challenge(session_id, now_bound)
    current_metrics().refresh_answered(issued)
    auth.sign_in(issued)
    return jsonify(session_description(session_id))
