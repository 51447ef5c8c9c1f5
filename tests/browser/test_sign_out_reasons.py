"""Each reason a session can end reaches the browser it ended, in its own words, on the
page it lands on next (SPEC: "Why a browser was signed out").

How each session ends is done on the server, through the engine, as the views and
commands do; what is under test is what the signed-out browser then shows.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from webapp import accounts, sessions
from webapp.auth.hooks import SIGN_OUT_MESSAGES
from webapp.database import unit_of_work
from webapp.extensions import db
from webapp.models import Session
from webapp.sessions import EndReason

from .conftest import REFRESH_REUSE_GRACE, browser_tests

pytestmark = browser_tests


def end_session(app, email: str, session_id: str, reason: EndReason, now) -> None:
    with app.app_context(), unit_of_work(db.session):
        user = accounts.find_user(db.session, email)
        if reason is EndReason.EXPIRED:
            db.session.execute(
                update(Session)
                .where(Session.public_id == session_id)
                .values(idle_expires_at=now - timedelta(seconds=1))
            )
        elif reason is EndReason.ACCOUNT_DISABLED:
            accounts.disable_user(db.session, email, now=now)
        elif reason is EndReason.SIGNED_OUT_BY_OPERATOR:
            accounts.sign_out_everywhere(db.session, email, now=now)
        else:
            sessions.revoke_session(db.session, session_id, user_id=user.id, now=now, reason=reason)


@pytest.mark.parametrize("reason", [reason for reason in EndReason if reason is not EndReason.SIGNED_OUT])
def test_the_signed_out_browser_is_told_why(devices, email, live_server, reason):
    browser = devices()
    browser.register(email)
    session_id = browser.session_id()
    end_session(live_server.app, email, session_id, reason, live_server.clock())
    if reason is EndReason.SUPERSEDED:
        # For a moment its old cookies are the browser's own request from before the
        # change, answered without clearing anything: later they are told.
        live_server.clock.advance(REFRESH_REUSE_GRACE + 1)

    # The access cookie is gone (as when it expires): the next page asks the refresh
    # token, which the server refuses, saying why.
    browser.context.clear_cookies(name="access_token")
    browser.page.goto("/")
    message, category = SIGN_OUT_MESSAGES[reason]
    notice = browser.page.locator(".flash").filter(has_text=message)
    notice.wait_for()
    assert notice.get_attribute("role") == ("alert" if category == "danger" else "status")
    assert browser.signed_in_email() is None
    # Told once: the next page is quiet.
    browser.page.goto("/")
    assert browser.page.locator(".flash").count() == 0
