"""A thief with a copy of a browser's refresh cookie, who replays it once the copy is old.

The copy is replayed when the app promises to catch it (README, "How it works"): when
the victim's own cookie is two or more rotations ahead of the copy ("older"), or one
ahead once that rotation is older than the grace window and a request of the victim's
has proved it arrived, in one of two ways:

- "previous": the victim was signed in by an access token issued with that rotation;
- "undelivered" (the name it had while the app missed it): the victim holds the newer
  refresh cookie beside a grace answer's access cookie (issued with the copy's counter,
  as when parallel requests shared a rotation and the grace answer arrived last), and
  was signed in by that pair: the refresh cookie a request carries proves its rotation
  arrived (webapp/sessions.py `authenticate(..., refresh_token=)`).

Within the grace window the app honours the copy on purpose, and so it does later when
no request proved the rotation arrived (a lost answer, sent again once): such replays are
not made. A one-ahead copy whose rotation was proven the other way (a "previous" one by
the refresh cookie, an "undelivered" one by its own access token) is copied again (malware
still on the machine), a few times at most, then left to become an "older" one. While a
one-ahead copy waits for the victim's next rotation, the victim leaves the tab until its
access cookie expires and comes back with a navigation ("previous": the page's own request
rotates, its scripts then use the new access token) or to the open page ("undelivered":
its scripts share the rotation, and the grace answers usually arrive last).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from locust.clients import HttpSession

from .browser import BY_ACCESS, BY_REFRESH, Browser
from .observations import REPLAY, LoadPlan, Recorder, ReplayRecord
from .pages import REFRESH_COOKIE, RefreshToken, auth_cookie_change, flash_messages

# How long after the grace window (measured from when the victim got the newer token,
# which is after the app's rotation) a "previous" replay waits: clock and scheduling slack.
GRACE_MARGIN = 1.5
POLL_SECONDS = 0.5
PREVIOUS = "previous"
UNDELIVERED = "undelivered"
# A one-ahead copy whose rotation was proven the other way can never become its case: the
# malware copies the cookie again, this many times at most, before the copy is left to
# turn into an "older" one.
MAX_RECOPIES = 4


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
    proof = victim.delivered.get((sid, copied + 1))
    if copy.variant == "previous" and proof == BY_ACCESS:
        return "previous"
    if copy.variant == "undelivered" and proof == BY_REFRESH:
        return "undelivered"
    return None


def _one_ahead(copy: CopiedCookie, victim: Browser) -> bool:
    current = victim.refresh_token()
    return (
        copy.variant != "older"
        and current is not None
        and current.session_id == copy.token.session_id
        and current.counter == copy.token.counter + 1
    )


def missed_its_case(copy: CopiedCookie, victim: Browser) -> bool:
    """A one-ahead copy one rotation behind, whose rotation was proven the other way (a
    "previous" copy's by the refresh cookie, an "undelivered" one's by its own access
    token): its case can no longer come about."""
    if not _one_ahead(copy, victim):
        return False
    proof = victim.delivered.get((copy.token.session_id, copy.token.counter + 1))
    return proof == (BY_REFRESH if copy.variant == PREVIOUS else BY_ACCESS)


def holding_still_for(copy: CopiedCookie, victim: Browser) -> bool:
    """Whether the victim's jar is in the state the copy's one-ahead case waits for,
    which the victim's next request after the grace window would change (it rotates):
    a person stepping away lets the thief find it."""
    if not _one_ahead(copy, victim):
        return False
    proof = victim.delivered.get((copy.token.session_id, copy.token.counter + 1))
    return proof == (BY_ACCESS if copy.variant == PREVIOUS else BY_REFRESH)


def awaiting_proof(copy: CopiedCookie, victim: Browser) -> bool:
    """Whether an "undelivered" copy's state has come about but is not proven yet: the
    victim holds the newer refresh cookie beside a grace answer's unexpired access
    cookie, and has sent nothing with them. Its next request, if it comes before that
    access cookie expires (a person clicking on at once), proves the rotation by the
    refresh cookie alone."""
    if copy.variant != "undelivered" or not _one_ahead(copy, victim):
        return False
    access = victim.access_claims()
    return (
        (copy.token.session_id, copy.token.counter + 1) not in victim.delivered
        and access is not None
        and access.session_id == copy.token.session_id
        and access.counter == copy.token.counter
        and access.expires_at > time.time() + 1
    )


def awaiting_rotation(copy: CopiedCookie, victim: Browser) -> bool:
    """Whether a one-ahead copy ("previous", "undelivered") still waits for the victim's
    next rotation (the victim's jar holds the copied token)."""
    current = victim.refresh_token()
    return (
        copy.variant in (PREVIOUS, UNDELIVERED)
        and current is not None
        and current.session_id == copy.token.session_id
        and current.counter == copy.token.counter
    )


def replay_when_due(
    copy: CopiedCookie,
    victim: Browser,
    *,
    still_on_copied_session: Callable[[], bool],
    new_jar: Callable[[], HttpSession],
    plan: LoadPlan,
    recorder: Recorder,
    copied_again: Callable[[CopiedCookie], None],
) -> ReplayRecord | None:
    """Wait until the copy is due, then present it from a browser of the thief's own:
    a navigation to /account with nothing but the copied refresh cookie. Returns the
    record, or None when the victim left that session first or the soak ended."""
    recopies = 0
    while time.time() < plan.deadline:
        gevent.sleep(POLL_SECONDS)
        if not still_on_copied_session():
            return None
        if recopies < MAX_RECOPIES and missed_its_case(copy, victim):
            fresh = copy_refresh_cookie(victim, variant=copy.variant)
            if fresh is not None:
                copy, recopies = fresh, recopies + 1
                copied_again(copy)
                continue
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
