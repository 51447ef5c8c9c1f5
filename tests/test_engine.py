"""The session engine, with a fake clock and no HTTP: issue, rotate, grace, reuse,
lifetimes, revocation and key rotation. No Flask app either: a plain SQLAlchemy session
on the migrated database, committed where the web edge would commit."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from webapp import accounts, sessions, tokens
from webapp.database import unit_of_work
from webapp.devices import Device
from webapp.models import SecurityEvent, Session
from webapp.security_events import EventKind
from webapp.tokens import KeyRing

from .conftest import PASSWORD, TEST_SECRET


@pytest.fixture
def user(db_session, clock):
    with unit_of_work(db_session):
        return accounts.create_user(db_session, "alice@example.com", PASSWORD, rounds=4, now=clock())


def start(db_session, user, policy, clock, **kwargs):
    with unit_of_work(db_session):
        return sessions.start_session(
            db_session, user, policy=policy, now=clock(), device=Device("UA", "127.0.0.1"), **kwargs
        )


def rotate(db_session, token, policy, clock):
    """As the auth hook does: commit what the rotation wrote, a refusal's revocation too."""
    try:
        return sessions.rotate_refresh_token(db_session, token, policy=policy, now=clock())
    finally:
        db_session.commit()


def use(db_session, issued, policy, clock):
    """A request of the browser that received `issued`, signed in by its access token, as
    the auth hook does it: the session learns that rotation reached the browser."""
    signed_in = sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())
    sessions.touch_session(db_session, signed_in, now=clock())
    db_session.commit()
    return signed_in


def reuse_events(db_session) -> list[str]:
    return list(
        db_session.execute(select(SecurityEvent.kind).where(SecurityEvent.kind == EventKind.REFRESH_TOKEN_REUSED))
        .scalars()
        .all()
    )


def session_row(db_session, session_id) -> Session:
    db_session.expire_all()
    return db_session.execute(select(Session).where(Session.public_id == session_id)).scalar_one()


@contextmanager
def count_queries(db_session):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db_session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_start_session_issues_counter_zero_and_valid_access_token(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    assert session_row(db_session, issued.session_id).counter == 0
    signed_in = sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())
    assert (signed_in.user_id, signed_in.email, signed_in.session_id) == (
        user.id,
        "alice@example.com",
        issued.session_id,
    )
    assert issued.refresh_token.startswith(issued.session_id + ".0.")


def test_session_ids_are_unguessable_and_distinct(db_session, user, policy, clock):
    ids = {start(db_session, user, policy, clock).session_id for _ in range(5)}
    assert len(ids) == 5
    assert all(len(session_id) >= 22 for session_id in ids)


def test_access_token_carries_every_required_claim(db_session, user, policy, clock):
    import jwt

    issued = start(db_session, user, policy, clock)
    header = jwt.get_unverified_header(issued.access_token)
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert header["alg"] == "HS256" and header["kid"] == policy.keys.signing_kid
    assert set(claims) == {"iss", "aud", "sub", "sid", "ctr", "iat", "exp", "jti"}
    assert claims["ctr"] == 0
    assert claims["exp"] - claims["iat"] == policy.access_ttl


def test_access_token_expiry_is_capped_at_the_absolute_end(db_session, user, policy, clock):
    short = replace(policy, max_age=60, access_ttl=900)
    issued = start(db_session, user, short, clock)
    assert issued.access_expires_at == clock() + timedelta(seconds=60)


def test_rotation_advances_counter_and_returns_new_tokens(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    clock.advance(5)
    rotated = rotate(db_session, issued.refresh_token, policy, clock)
    assert rotated.refresh_token != issued.refresh_token
    assert rotated.refresh_token.startswith(issued.session_id + ".1.")
    assert session_row(db_session, issued.session_id).counter == 1
    assert rotated.access_token != issued.access_token


def test_expired_access_token_says_try_rotation(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    clock.advance(policy.access_ttl)
    with pytest.raises(tokens.AccessTokenExpired):
        sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())


def test_grace_window_serves_an_access_token_and_writes_nothing(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    first = rotate(db_session, issued.refresh_token, policy, clock)
    clock.advance(policy.reuse_grace - 1)
    with count_queries(db_session) as statements:
        again = rotate(db_session, issued.refresh_token, policy, clock)
    # Served: a fresh access token for the same session...
    assert sessions.authenticate(db_session, again.access_token, policy=policy, now=clock()).session_id == (
        issued.session_id
    )
    # ...but never the current refresh token: that only the rotation's winner gets.
    assert again.refresh_token == issued.refresh_token != first.refresh_token
    assert again.rotated is False and again.new_refresh_token is False
    assert not any(statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")) for statement in statements)
    assert session_row(db_session, issued.session_id).counter == 1


def test_grace_window_is_not_rearmed_by_use(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    use(db_session, rotate(db_session, issued.refresh_token, policy, clock), policy, clock)
    # Presenting the old token inside the window does not move the window.
    for _ in range(3):
        clock.advance(policy.reuse_grace / 4)
        rotate(db_session, issued.refresh_token, policy, clock)
    clock.advance(policy.reuse_grace / 4)
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, issued.refresh_token, policy, clock)


def test_previous_token_after_grace_window_revokes_the_session(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    current = rotate(db_session, issued.refresh_token, policy, clock)
    use(db_session, current, policy, clock)  # the successor reached the browser
    clock.advance(policy.reuse_grace)
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, issued.refresh_token, policy, clock)
    assert session_row(db_session, issued.session_id).revoked_at is not None
    # The legitimate holder is signed out too: somebody holds a copy.
    with pytest.raises(sessions.RefreshRejected):
        rotate(db_session, current.refresh_token, policy, clock)
    with pytest.raises(sessions.SessionInactive):
        sessions.authenticate(db_session, current.access_token, policy=policy, now=clock())
    kinds = db_session.execute(select(SecurityEvent.kind)).scalars().all()
    assert kinds.count(EventKind.REFRESH_TOKEN_REUSED) == 1


def test_the_current_refresh_token_beside_a_grace_access_token_proves_the_rotation_arrived(
    db_session, user, policy, clock
):
    issued = start(db_session, user, policy, clock)
    current = rotate(db_session, issued.refresh_token, policy, clock)
    grace = rotate(db_session, issued.refresh_token, policy, clock)  # the page's other request
    # The previous refresh token beside it proves nothing: the answer may have been lost.
    signed_in = sessions.authenticate(
        db_session, grace.access_token, policy=policy, now=clock(), refresh_token=issued.refresh_token
    )
    assert signed_in.delivers_counter is None
    signed_in = sessions.authenticate(
        db_session, grace.access_token, policy=policy, now=clock(), refresh_token=current.refresh_token
    )
    assert signed_in.delivers_counter == 1
    sessions.touch_session(db_session, signed_in, now=clock())
    clock.advance(policy.reuse_grace)
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, issued.refresh_token, policy, clock)


@pytest.mark.parametrize("steps_back", [2, 3])
def test_any_older_counter_revokes_even_inside_the_window(db_session, user, policy, clock, steps_back):
    issued = start(db_session, user, policy, clock)
    chain = [issued]
    for _ in range(steps_back):
        chain.append(rotate(db_session, chain[-1].refresh_token, policy, clock))
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, chain[-1 - steps_back].refresh_token, policy, clock)
    assert session_row(db_session, issued.session_id).revoked_reason == "reuse"


def test_counter_ahead_of_the_database_is_rejected_without_revoking(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    future = tokens.mint_refresh_token(issued.session_id, 7, keys=policy.keys)
    with pytest.raises(sessions.RefreshRejected) as raised:
        rotate(db_session, future, policy, clock)
    assert not isinstance(raised.value, sessions.RefreshTokenReused)
    assert session_row(db_session, issued.session_id).revoked_at is None


def test_idle_timeout_counts_from_the_last_rotation(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    clock.advance(policy.refresh_ttl - 10)
    rotated = rotate(db_session, issued.refresh_token, policy, clock)
    clock.advance(policy.refresh_ttl - 10)
    rotated = rotate(db_session, rotated.refresh_token, policy, clock)  # still alive: idle clock restarted
    clock.advance(policy.refresh_ttl)
    with pytest.raises(sessions.RefreshRejected):
        rotate(db_session, rotated.refresh_token, policy, clock)


def test_absolute_timeout_is_never_extended(db_session, user, policy, clock):
    short = replace(policy, max_age=3600, refresh_ttl=1000, access_ttl=300)
    issued = start(db_session, user, short, clock)
    token = issued.refresh_token
    for _ in range(3):
        clock.advance(900)
        rotated = rotate(db_session, token, short, clock)
        token = rotated.refresh_token
        assert rotated.refresh_expires_at <= session_row(db_session, issued.session_id).expires_at
        assert rotated.access_expires_at <= session_row(db_session, issued.session_id).expires_at
    clock.advance(900)  # 3600 s after sign-in
    with pytest.raises(sessions.RefreshRejected):
        rotate(db_session, token, short, clock)


def test_revoked_session_refuses_its_unexpired_access_token(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    assert sessions.revoke_session(db_session, issued.session_id, user_id=user.id, now=clock())
    with pytest.raises(sessions.SessionInactive):
        sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())
    with pytest.raises(sessions.RefreshRejected):
        rotate(db_session, issued.refresh_token, policy, clock)


def test_revoke_session_of_another_user_changes_nothing(db_session, user, policy, clock):
    other = accounts.create_user(db_session, "bob@example.com", PASSWORD, rounds=4, now=clock())
    issued = start(db_session, user, policy, clock)
    assert not sessions.revoke_session(db_session, issued.session_id, user_id=other.id, now=clock())
    assert session_row(db_session, issued.session_id).revoked_at is None


def test_revoke_other_sessions_keeps_only_the_current_one(db_session, user, policy, clock):
    keep, *others = [start(db_session, user, policy, clock) for _ in range(3)]
    ended = sessions.revoke_other_sessions(db_session, user_id=user.id, keep_session_id=keep.session_id, now=clock())
    assert ended == 2
    assert sessions.authenticate(db_session, keep.access_token, policy=policy, now=clock()).session_id == (
        keep.session_id
    )
    for issued in others:
        with pytest.raises(sessions.SessionInactive):
            sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())


def test_token_signed_under_a_fallback_secret_still_verifies(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    rotated_keys = KeyRing.from_secrets("a-brand-new-secret-key-0123456789-abcdefghij", [TEST_SECRET])
    new_policy = replace(policy, keys=rotated_keys)
    signed_in = sessions.authenticate(db_session, issued.access_token, policy=new_policy, now=clock())
    assert signed_in.session_id == issued.session_id
    rotated = rotate(db_session, issued.refresh_token, new_policy, clock)
    # New tokens are made under the new secret only.
    claims = tokens.decode_access_token(
        rotated.access_token,
        keys=KeyRing.from_secrets("a-brand-new-secret-key-0123456789-abcdefghij"),
        now=int(clock().timestamp()),
        issuer=policy.issuer,
        audience=policy.audience,
    )
    assert (claims.user_id, claims.session_id, claims.counter) == (user.id, issued.session_id, 1)


def test_token_with_an_unknown_kid_is_rejected(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    unrelated = replace(policy, keys=KeyRing.from_secrets("an-entirely-different-secret-0123456789-xyz"))
    with pytest.raises(tokens.InvalidToken):
        sessions.authenticate(db_session, issued.access_token, policy=unrelated, now=clock())
    with pytest.raises(sessions.RefreshRejected):
        rotate(db_session, issued.refresh_token, unrelated, clock)


def test_forged_refresh_token_costs_no_query(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    session_id, counter, mac = issued.refresh_token.split(".")
    # The live counter, a MAC one character off.
    forged = f"{session_id}.{counter}.{mac[:-1]}{'B' if mac[-1] != 'B' else 'C'}"
    # The rotation's read does not go through cursor events (dbapi_select.py), so watch
    # for any connection being used at all.
    checkouts = []

    def record(*args):
        checkouts.append(args)

    engine = db_session.get_bind()
    db_session.close()
    event.listen(engine.pool, "checkout", record)
    try:
        with pytest.raises(sessions.RefreshRejected):
            sessions.rotate_refresh_token(db_session, forged, policy=policy, now=clock())
    finally:
        event.remove(engine.pool, "checkout", record)
    assert checkouts == []
    assert session_row(db_session, session_id).counter == 0


def test_disabled_user_is_signed_out_at_once(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    user.disabled_at = clock()
    db_session.commit()
    with pytest.raises(sessions.SessionInactive):
        sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())


def test_last_active_is_written_at_most_once_a_minute(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    signed_in = sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())
    clock.advance(30)
    with count_queries(db_session) as statements:
        sessions.touch_session(db_session, signed_in, now=clock())
    assert statements == []
    clock.advance(31)
    sessions.touch_session(db_session, signed_in, now=clock())
    assert session_row(db_session, issued.session_id).last_active_at == clock()


def test_a_token_verified_once_is_still_checked_for_expiry_and_revocation(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())  # now remembered
    clock.advance(policy.access_ttl)
    with pytest.raises(tokens.AccessTokenExpired):
        sessions.authenticate(db_session, issued.access_token, policy=policy, now=clock())
    second = start(db_session, user, policy, clock)
    sessions.authenticate(db_session, second.access_token, policy=policy, now=clock())
    sessions.revoke_session(db_session, second.session_id, user_id=user.id, now=clock())
    with pytest.raises(sessions.SessionInactive):
        sessions.authenticate(db_session, second.access_token, policy=policy, now=clock())


def test_a_rotation_whose_answer_was_lost_is_not_theft(db_session, user, policy, clock):
    """The server rotated, the answer never reached the browser (a dropped connection, an
    aborted navigation): its next request, long after, carries the previous token."""
    issued = start(db_session, user, policy, clock)
    lost = rotate(db_session, issued.refresh_token, policy, clock)
    clock.advance(policy.access_ttl)
    again = rotate(db_session, issued.refresh_token, policy, clock)
    assert again.refresh_token == lost.refresh_token and again.new_refresh_token
    assert session_row(db_session, issued.session_id).revoked_at is None
    assert reuse_events(db_session) == []
    # And the session goes on from there.
    assert rotate(db_session, again.refresh_token, policy, clock).refresh_token.startswith(f"{issued.session_id}.2.")


def test_a_thief_following_rotations_is_cut_off_within_one_window(db_session, user, policy, clock):
    """A copy of one retired refresh token, presented inside every grace window, gets an
    access token in the first window and nothing but the alarm after: it never learns
    the current refresh token, so it cannot follow the session."""
    issued = start(db_session, user, policy, clock)
    stolen = issued.refresh_token
    victim = rotate(db_session, issued.refresh_token, policy, clock)
    use(db_session, victim, policy, clock)

    clock.advance(1)
    loot = rotate(db_session, stolen, policy, clock)  # inside the window: served...
    assert loot.refresh_token == stolen  # ...but with nothing new to follow

    clock.advance(policy.access_ttl)
    victim = rotate(db_session, victim.refresh_token, policy, clock)
    use(db_session, victim, policy, clock)
    clock.advance(1)
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, loot.refresh_token, policy, clock)
    assert reuse_events(db_session) == [EventKind.REFRESH_TOKEN_REUSED]
    # The whole session ends: the owner signs in again, the thief has nothing left.
    with pytest.raises(sessions.SessionInactive):
        sessions.authenticate(db_session, victim.access_token, policy=policy, now=clock())


def test_twenty_requests_of_one_page_load_are_all_served(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    clock.advance(policy.access_ttl)
    answers = [rotate(db_session, issued.refresh_token, policy, clock) for _ in range(20)]
    assert [answer.rotated for answer in answers] == [True] + [False] * 19
    for answer in answers:
        signed_in = sessions.authenticate(db_session, answer.access_token, policy=policy, now=clock())
        assert signed_in.session_id == issued.session_id
    # The browser keeps the winner's refresh token: the others leave the cookie alone.
    assert [answer.new_refresh_token for answer in answers] == [True] + [False] * 19
    assert session_row(db_session, issued.session_id).counter == 1
    assert reuse_events(db_session) == []


def test_ending_a_session_with_a_retired_refresh_token_is_reuse(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    use(db_session, rotate(db_session, issued.refresh_token, policy, clock), policy, clock)
    clock.advance(policy.reuse_grace)
    with unit_of_work(db_session):
        assert sessions.revoke_by_refresh_token(db_session, issued.refresh_token, policy=policy, now=clock())
    assert session_row(db_session, issued.session_id).revoked_reason == "reuse"
    assert reuse_events(db_session) == [EventKind.REFRESH_TOKEN_REUSED]


def test_ending_a_session_with_its_current_refresh_token_is_a_sign_out(db_session, user, policy, clock):
    issued = start(db_session, user, policy, clock)
    current = rotate(db_session, issued.refresh_token, policy, clock)
    with unit_of_work(db_session):
        assert sessions.revoke_by_refresh_token(db_session, current.refresh_token, policy=policy, now=clock())
    assert session_row(db_session, issued.session_id).revoked_reason == "signed_out"
    assert reuse_events(db_session) == []


def test_a_copy_that_only_presents_the_previous_token_is_caught_at_its_second_use(db_session, user, policy, clock):
    """Malware copied the cookie jar. The thief rotates once, then keeps presenting the
    copied (now previous) token, never the successor, so the successor never looks
    delivered: that is answered once as a lost answer, and then it is reuse."""
    issued = start(db_session, user, policy, clock)
    owner = rotate(db_session, issued.refresh_token, policy, clock)
    use(db_session, owner, policy, clock)
    copy = owner.refresh_token

    clock.advance(policy.access_ttl)
    rotate(db_session, copy, policy, clock)  # the thief's first use rotates
    clock.advance(policy.reuse_grace + 1)
    rotate(db_session, copy, policy, clock)  # indistinguishable from a lost answer: once
    # The page that fetched it may still send the old token for a moment...
    clock.advance(1)
    assert rotate(db_session, copy, policy, clock).new_refresh_token is False
    # ...but not after its window: the alarm, for the thief or for the owner coming back.
    clock.advance(policy.reuse_grace)
    with pytest.raises(sessions.RefreshTokenReused):
        rotate(db_session, copy, policy, clock)
    assert reuse_events(db_session) == [EventKind.REFRESH_TOKEN_REUSED]
