"""A thief with a copy of a browser's refresh cookie, who replays it once the copy is old.

The copy is replayed when the app promises to catch it (README, "How it works"): when
the victim's own cookie is two or more rotations ahead of the copy ("older"), or one
ahead ("previous") once that rotation is older than the grace window and has been
delivered (the victim was signed in by an access token issued with it). Within the grace
window the app honours the copy on purpose, and such replays are not made.

One more case is probed, not promised ("undelivered"): the victim holds the newer refresh
cookie, but its access cookie is a grace answer's (issued with the copy's counter, as
when parallel requests shared a rotation and the grace answer arrived last), so the app
has no proof that the rotation reached it and treats a replay after the grace window as
a lost answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from locust.clients import HttpSession

from .browser import Browser
from .observations import REPLAY, LoadPlan, Recorder, ReplayRecord
from .pages import REFRESH_COOKIE, RefreshToken, auth_cookie_change, flash_messages

# How long after the grace window (measured from when the victim got the newer token,
# which is after the app's rotation) a "previous" replay waits: clock and scheduling slack.
GRACE_MARGIN = 1.5
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class CopiedCookie:
    """The victim's refresh cookie as it was copied (malware reading the cookie store)."""

    value: str
    token: RefreshToken
    copied_at: float
    variant: str  # what the thief waits for: "older", "previous" or "undelivered"


def copy_refresh_cookie(victim: Browser, *, variant: str) -> CopiedCookie | None:
    value = victim.cookie(REFRESH_COOKIE)
    token = RefreshToken.parse(value)
    if value is None or token is None:
        return None
    return CopiedCookie(value, token, time.time(), variant)


def due_variant(copy: CopiedCookie, victim: Browser, *, grace: float, now: float) -> str | None:
    """Which promised case a replay now would be, or None while the app may still honour it."""
    current = victim.refresh_token()
    if current is None or current.session_id != copy.token.session_id:
        return None
    sid, copied = copy.token.session_id, copy.token.counter
    if current.counter >= copied + 2:
        return "older"
    seen_at = victim.counter_seen_at.get((sid, copied + 1))
    if current.counter != copied + 1 or seen_at is None or now - seen_at < grace + GRACE_MARGIN:
        return None
    delivered = (sid, copied + 1) in victim.delivered
    if copy.variant == "previous" and delivered:
        return "previous"
    if copy.variant == "undelivered" and not delivered:
        return "undelivered"
    return None


def holding_still_for(copy: CopiedCookie, victim: Browser) -> bool:
    """Whether the victim's jar is in the state the copy's one-ahead case waits for,
    which the victim's next request after the grace window would change (it rotates):
    a person stepping away lets the thief find it."""
    current = victim.refresh_token()
    if copy.variant == "older" or current is None or current.session_id != copy.token.session_id:
        return False
    if current.counter != copy.token.counter + 1:
        return False
    delivered = (current.session_id, current.counter) in victim.delivered
    if copy.variant == "previous":
        return delivered
    access = victim.access_claims()
    return not delivered and access is not None and access.counter == copy.token.counter


def replay_when_due(
    copy: CopiedCookie,
    victim: Browser,
    *,
    still_on_copied_session: Callable[[], bool],
    new_jar: Callable[[], HttpSession],
    plan: LoadPlan,
    recorder: Recorder,
) -> ReplayRecord | None:
    """Wait until the copy is due, then present it from a browser of the thief's own:
    a navigation to /account with nothing but the copied refresh cookie. Returns the
    record, or None when the victim left that session first or the soak ended."""
    while time.time() < plan.deadline:
        gevent.sleep(POLL_SECONDS)
        if not still_on_copied_session():
            return None
        victim_counter = victim.refresh_token()
        variant = due_variant(copy, victim, grace=plan.reuse_grace, now=time.time())
        if variant is None or victim_counter is None:
            continue
        thief = Browser(victim.index, new_jar(), recorder, actor="thief")
        thief.http.cookies.set(REFRESH_COOKIE, copy.value, domain="127.0.0.1", path="/", secure=True)
        visit = thief.visit("/account", kind=REPLAY)
        answer = visit.answer
        if answer.status in (0, 502, 503, 504):
            continue  # an outage of ours: the app decided nothing, try again later
        rotated, grace, cleared = auth_cookie_change(answer.set_cookies)
        record = ReplayRecord(
            victim=victim.index,
            session_id=copy.token.session_id,
            copied_counter=copy.token.counter,
            victim_counter=victim_counter.counter,
            variant=variant,
            copied_at=copy.copied_at,
            sent_at=answer.sent_at,
            received_at=answer.received_at,
            status=answer.status,
            location=answer.location,
            cleared=cleared,
            new_cookies=rotated or grace,
            signed_in=visit.outcome == "ok",
            message=" | ".join(flash_messages(visit.body)) or None,
        )
        recorder.replays.append(record)
        for session_id, counter in thief.max_counter.items():
            victim.max_counter[session_id] = max(victim.max_counter.get(session_id, -1), counter)
        return record
    return None
