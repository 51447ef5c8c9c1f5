"""The signed-in `/account` page as every peer renders it: our template, our context's shape.

Ours (`profile` in webapp/account/views.py) renders templates/account/profile.html with
the device the request comes from, the session's times and the user's five latest
security events, which it reads from the database. A peer renders the same template with
the same context: the device from the request and the rows formatted per request with
our own functions and dataclasses (so the formatting costs the same on every side), its
times from wherever its library keeps them, and five fixed events, `RECENT_ACTIVITY`,
instead of a query. The bench gives our user the same five events in its database
(`population.create_security_events`), so every side lists the same rows and the pages
weigh within a few percent of each other. What differs is how a request gets signed in.

The templates also need endpoints the peers do not have (`account.sessions`,
`account.password`, `main.index`): `add_stub_endpoints` gives them routes that answer 404,
the cheapest honest way to make `url_for` work, and none of them is ever requested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Blueprint, render_template, request

from webapp.account.views import SECURITY_EVENTS_ON_PROFILE, Moment, event_rows
from webapp.devices import device_kind, device_words
from webapp.security_events import EventKind

from .server import ROOT

TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
ACCOUNT_TEMPLATE = "account/profile.html"
# What a browser sends: the bench's browsers (http.client, wrk) send no User-Agent, so
# these are only in the activity rows, as a real account's history would have them.
_CHROME_ON_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_FIREFOX_ON_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"
_SAFARI_ON_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)


@dataclass(frozen=True)
class PastEvent:
    """A security event some time before the bench starts: kind, how long before, and the
    device it came from."""

    kind: EventKind
    age: timedelta
    user_agent: str
    ip_address: str


# Five, as many as our /account shows: an ordinary week of an account.
RECENT_ACTIVITY: tuple[PastEvent, ...] = (
    PastEvent(EventKind.SIGNED_IN, timedelta(minutes=12), _CHROME_ON_MAC, "198.51.100.23"),
    PastEvent(EventKind.PASSWORD_CHANGED, timedelta(hours=3), _CHROME_ON_MAC, "198.51.100.23"),
    PastEvent(EventKind.SESSION_REVOKED, timedelta(hours=3, minutes=2), _CHROME_ON_MAC, "198.51.100.23"),
    PastEvent(EventKind.SIGNED_IN, timedelta(days=2), _SAFARI_ON_IPHONE, "203.0.113.77"),
    PastEvent(EventKind.SIGNED_OUT, timedelta(days=5), _FIREFOX_ON_WINDOWS, "192.0.2.140"),
)
if len(RECENT_ACTIVITY) != SECURITY_EVENTS_ON_PROFILE:
    raise RuntimeError(f"our /account shows {SECURITY_EVENTS_ON_PROFILE} events: RECENT_ACTIVITY must have as many")


@dataclass(frozen=True)
class StoredEvent:
    """A security event with the attributes ours reads from its table (`SecurityEvent`)."""

    kind: str
    created_at: datetime
    user_agent: str
    client_name: str | None
    ip_address: str
    session_public_id: str | None


def stored_activity(before: datetime) -> tuple[StoredEvent, ...]:
    """`RECENT_ACTIVITY` as rows recorded before `before`, newest first (as ours lists them)."""
    return tuple(
        StoredEvent(
            kind=str(event.kind),
            created_at=before - event.age,
            user_agent=event.user_agent,
            client_name=None,
            ip_address=event.ip_address,
            # Events of other sessions: none is "This device", on our side either.
            session_public_id=None,
        )
        for event in sorted(RECENT_ACTIVITY, key=lambda event: event.age)
    )


@dataclass(frozen=True)
class PageTimes:
    """The session's times as the page shows them."""

    signed_in_at: datetime
    idle_expires_at: datetime  # signed out here if the browser stops using the site
    expires_at: datetime  # signed out here at the latest
    persistent: bool  # the cookie outlives the browser


def render_account_page(
    *,
    signed_in: object,
    csrf_token: Callable[[], str],
    times: PageTimes,
    activity: Sequence[StoredEvent],
    now: datetime,
) -> str:
    """templates/account/profile.html with the context ours gives it; `signed_in` needs an
    `email`, and `csrf_token` is what the template calls for the sign-out form."""
    user_agent = request.user_agent.string
    return render_template(
        ACCOUNT_TEMPLATE,
        signed_in=signed_in,
        csrf_token=csrf_token,
        device=device_words(user_agent),
        device_kind=device_kind(user_agent),
        ip_address=request.remote_addr,
        signed_in_at=Moment.of(times.signed_in_at, now),
        idle_expires_at=Moment.ahead(times.idle_expires_at, now),
        expires_at=Moment.ahead(times.expires_at, now),
        persistent=times.persistent,
        # The rows as ours builds them (webapp/account/views.py), from the peer's own.
        events=event_rows(activity, session_id=None, now=now),
    )


def _not_part_of_the_bench() -> tuple[str, int]:
    return "not part of the bench", 404


def add_stub_endpoints(blueprint: Blueprint, endpoints: Iterable[str]) -> Blueprint:
    """Give `blueprint` a 404 route for each endpoint name the template links to but the
    peer does not have (`/<name>` under the blueprint's prefix). Returns the blueprint."""
    for endpoint in endpoints:
        blueprint.add_url_rule(f"/{endpoint}", endpoint, _not_part_of_the_bench)
    return blueprint


def stub_main_blueprint() -> Blueprint:
    """`main.index`, which the header's brand links to."""
    blueprint = Blueprint("main", __name__)
    blueprint.add_url_rule("/", "index", _not_part_of_the_bench)
    return blueprint
