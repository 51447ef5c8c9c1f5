"""`flask prune` and the opportunistic prune at sign-in: ended sessions and old events go,
in batches; live sessions stay and keep working."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from webapp import accounts, retention, sessions
from webapp.devices import Device
from webapp.extensions import db
from webapp.models import SecurityEvent, Session
from webapp.security_events import EventKind, record_event

from .conftest import PASSWORD, AuthActions

DAY = timedelta(days=1)


def seed_session(app, user, clock, *, created_ago, idle_ends_in=None, ends_in=None, revoked_ago=None) -> str:
    """A session with the given times relative to now (negative `*_in`: in the past)."""
    now = clock()
    issued = sessions.start_session(
        db.session,
        user,
        policy=app.extensions["session_policy"],
        now=now - created_ago,
        device=Device("UA", "192.0.2.1"),
    )
    values = {}
    if idle_ends_in is not None:
        values["idle_expires_at"] = now + idle_ends_in
    if ends_in is not None:
        values["expires_at"] = now + ends_in
    if revoked_ago is not None:
        values["revoked_at"] = now - revoked_ago
    if values:
        db.session.execute(update(Session).where(Session.public_id == issued.session_id).values(**values))
    db.session.commit()
    return issued.session_id


def seed_event(user, clock, *, ago) -> int:
    record_event(db.session, user_id=user.id, kind=EventKind.SIGNED_IN, now=clock() - ago)
    db.session.commit()
    return db.session.execute(select(SecurityEvent.id).order_by(SecurityEvent.id.desc()).limit(1)).scalar_one()


def session_ids() -> set[str]:
    db.session.expire_all()
    return set(db.session.execute(select(Session.public_id)).scalars())


def event_ids() -> set[int]:
    return set(db.session.execute(select(SecurityEvent.id)).scalars())


@pytest.fixture
def seeded(app, clock):
    """alice signed in through the browser (live), and rows on each side of the cutoffs
    (PRUNE_AFTER_DAYS=30, SECURITY_EVENT_RETENTION_DAYS=90)."""
    browser = app.test_client()
    AuthActions(browser).register()
    live_browser = browser.get("/api/me").get_json()["session_id"]
    # Requests push app contexts of their own: seed in a context that ends before them.
    with app.app_context():
        user = accounts.find_user(db.session, "alice@example.com")
        db.session.execute(update(SecurityEvent).values(created_at=clock() - 10 * DAY))
        db.session.commit()
        kept = {
            live_browser,
            seed_session(app, user, clock, created_ago=DAY),  # live
            seed_session(app, user, clock, created_ago=29 * DAY, revoked_ago=29 * DAY),
            seed_session(app, user, clock, created_ago=12 * DAY, idle_ends_in=-5 * DAY),
            seed_session(app, user, clock, created_ago=31 * DAY, idle_ends_in=-20 * DAY, ends_in=-DAY),
        }
        removed = {
            seed_session(app, user, clock, created_ago=32 * DAY, revoked_ago=31 * DAY),
            seed_session(app, user, clock, created_ago=40 * DAY, idle_ends_in=-33 * DAY),
            # Idle end recent, absolute end long past: found through the expires_at index.
            seed_session(app, user, clock, created_ago=65 * DAY, idle_ends_in=-29 * DAY, ends_in=-35 * DAY),
        }
        old_events = {seed_event(user, clock, ago=91 * DAY), seed_event(user, clock, ago=200 * DAY)}
        assert session_ids() == kept | removed
        all_events = event_ids()
    return {"browser": browser, "kept": kept, "removed": removed, "old_events": old_events, "events": all_events}


def test_prune_removes_exactly_the_ended_sessions_and_old_events(app, runner, seeded):
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0, result.output
    assert "Removed 3 sessions" in result.output
    assert "and 2 security events" in result.output
    with app.app_context():
        assert session_ids() == seeded["kept"]
        assert event_ids() == seeded["events"] - seeded["old_events"]


def test_live_sessions_keep_working_after_prune(app, runner, clock, seeded):
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0, result.output
    assert "Removed 3 sessions" in result.output
    browser = seeded["browser"]
    assert browser.get("/account").status_code == 200
    # And their refresh tokens still rotate.
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert browser.get("/account").status_code == 200
    assert AuthActions(app.test_client()).login().status_code == 302


def test_prune_twice_removes_nothing_the_second_time(runner, seeded):
    first = runner.invoke(args=["prune"])
    assert first.exit_code == 0, first.output
    assert "Removed 3 sessions" in first.output and "and 2 security events" in first.output
    second = runner.invoke(args=["prune"])
    assert second.exit_code == 0, second.output
    assert "Removed 0 sessions" in second.output and "and 0 security events" in second.output


def test_prune_works_in_batches_that_each_commit(ctx, clock):
    user = accounts.create_user(db.session, "bob@example.com", PASSWORD, rounds=4, now=clock())
    db.session.commit()
    for _ in range(5):
        seed_session(ctx, user, clock, created_ago=40 * DAY, revoked_ago=35 * DAY)
    statements = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        removed = retention.prune_sessions(db.session, now=clock(), older_than=30 * DAY, batch_size=2)
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)
    assert removed == 5
    deletes = [statement for statement in statements if statement.lstrip().upper().startswith("DELETE")]
    # 2 + 2 + 1 for revoked_at, then one empty probe for each of the two other conditions.
    assert len(deletes) == 5
    assert all("LIMIT" in statement.upper() for statement in deletes)


def test_max_batches_bounds_the_work(ctx, clock):
    user = accounts.create_user(db.session, "bob@example.com", PASSWORD, rounds=4, now=clock())
    db.session.commit()
    for _ in range(5):
        seed_session(ctx, user, clock, created_ago=32 * DAY, revoked_ago=31 * DAY)
    assert retention.prune_sessions(db.session, now=clock(), older_than=30 * DAY, batch_size=2, max_batches=1) == 2
    assert len(session_ids()) == 3


def test_sign_in_prunes_a_small_batch_at_most_once_an_hour(app, clock):
    def seed_ended_session() -> str:
        with app.app_context():
            user = accounts.find_user(db.session, "alice@example.com")
            return seed_session(app, user, clock, created_ago=32 * DAY, revoked_ago=31 * DAY)

    def remaining() -> set[str]:
        with app.app_context():
            return session_ids()

    with app.app_context():
        accounts.create_user(db.session, "alice@example.com", PASSWORD, rounds=4, now=clock())
        db.session.commit()
    first = seed_ended_session()
    assert AuthActions(app.test_client()).login().status_code == 302
    assert first not in remaining()

    second = seed_ended_session()
    clock.advance(30 * 60)
    assert AuthActions(app.test_client()).login().status_code == 302
    assert second in remaining()  # pruned less than an hour ago: not yet

    clock.advance(31 * 60)
    assert AuthActions(app.test_client()).login().status_code == 302
    assert second not in remaining()
