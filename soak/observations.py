"""What the browsers saw, as plain records: written by the Locust process (soak/locustfile.py)
as JSON at the end of the load, read back by the soak to be judged (soak/verdict.py).

The browsers only observe and write down; deciding what was expected happens afterwards,
against the fault windows and the database. Times are wall-clock seconds (`time.time()`),
comparable with the fault windows and with the database's timestamps (one machine, one clock).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Request kinds.
PAGE = "page"  # a navigation
FETCH = "fetch"  # a page script's request through session-fetch.js
REFRESH = "refresh"  # session-fetch.js's POST /auth/refresh
FORM = "form"  # a form's GET or POST: sign-in, sign-out, revoke, dismiss
REPLAY = "replay"  # a thief's request with a copied refresh token

# How a browser learnt that it was signed out.
VIA_PAGE = "page"  # a page redirected it to the sign-in page (which says why)
VIA_HOME = "home"  # the home page, which shows itself signed out (and says why)
VIA_SCRIPT = "script"  # a page script's request got a 401 that a refresh could not mend


@dataclass(frozen=True)
class LoadPlan:
    """What the soak tells the Locust process: where the app is and how to behave."""

    base_url: str
    ca_file: str
    observations_file: str
    deadline: float  # browsers start no action after this moment
    access_token_ttl: int
    reuse_grace: int
    think_seconds: float
    run_id: str
    users: int

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, path: Path) -> LoadPlan:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class RequestRecord:
    browser: int
    actor: str  # "browser", or "thief" for a replay
    kind: str
    method: str
    path: str
    status: int  # 0: no answer at all (the connection failed)
    sent_at: float
    received_at: float
    ms: float
    session_id: str | None  # the session the request's cookies named
    counter: int | None  # the refresh token's counter it carried
    access_counter: int | None  # the counter of the (unexpired) access token it carried
    signed_in: bool | None  # the answer served a signed-in request (None: not a question for this kind)
    rotated: bool  # the answer set a new refresh cookie
    grace: bool  # the answer set a new access cookie and left the refresh cookie alone
    cleared: bool  # the answer cleared the auth cookies
    note: str | None  # "busy" (sign-in load shedding), the error of a failed connection, ...
    retry: bool  # sent again after the connection failed, as a browser does


@dataclass(frozen=True)
class PageLoadRecord:
    browser: int
    path: str  # "refocus": a tab coming back into view, its scripts' requests only
    started_at: float
    ended_at: float
    page_ms: float | None
    total_ms: float
    fetches: int
    outcome: str  # ok, signed_out, unavailable, failed


@dataclass(frozen=True)
class SignOutRecord:
    """A browser that believed itself signed in found that it was not."""

    browser: int
    session_id: str | None
    path: str
    via: str
    # What the browser showed first: the flash of the page it landed on, or the notice of
    # session-fetch.js (the 401's reason when it gave one, else "Your session has expired.").
    message: str | None
    sent_at: float
    received_at: float
    detail: str
    # After a page script's notice: the flash of the sign-in page its "Sign in again" link
    # opened (None: not a script's sign-out, or the link's page said nothing).
    landing_message: str | None = None


@dataclass(frozen=True)
class SignInRecord:
    browser: int
    form: str  # register or login
    ok: bool
    attempts: int
    busy: int  # 503s of the password-check slots (load shedding), each retried
    unavailable: int  # other 503s and failed connections, each retried
    started_at: float
    ended_at: float
    session_id: str | None
    detail: str


@dataclass(frozen=True)
class LogoutRecord:
    browser: int
    session_id: str | None
    sent_at: float
    done_at: float
    status: int


@dataclass(frozen=True)
class RevocationRecord:
    """One device of a person signed another of its devices out from the devices page."""

    browser: int
    target_browser: int
    session_id: str
    sent_at: float
    done_at: float
    status: int
    retried: bool  # the first try's connection failed: a 404 may mean that try did it
    gone_from_list: bool  # the devices page it was sent back to no longer lists the session

    @property
    def done(self) -> bool:
        return self.status in (302, 303) or (self.retried and self.status == 404)


@dataclass(frozen=True)
class ReplayRecord:
    """A thief presented a copy of an old refresh token."""

    victim: int
    session_id: str
    copied_counter: int
    victim_counter: int  # the counter of the victim's own refresh cookie when the copy was sent
    # "previous" (the victim's counter - 1, after the grace window), "older" or
    # "undelivered" (soak/thief.py)
    variant: str
    copied_at: float
    sent_at: float
    received_at: float
    status: int
    location: str | None
    cleared: bool
    new_cookies: bool  # the answer set auth cookies: the copy was honoured
    signed_in: bool
    message: str | None  # what the thief's sign-in page said


@dataclass(frozen=True)
class AlertCheckRecord:
    """After a replay was caught and its victim signed in again: did the devices page show it?"""

    victim: int
    session_id: str
    alert_seen: bool
    dismissed: bool


@dataclass(frozen=True)
class SecretRecord:
    """A value the soak's browsers held that no log line may contain (soak/telemetry.py)."""

    kind: str  # one of SECRET_KINDS
    value: str


# The kinds of secret the browsers record.
REFRESH_TOKEN = "refresh token"
ACCESS_TOKEN = "access token"
EMAIL = "email address"
PASSWORD = "password"
SECRET_KINDS = (REFRESH_TOKEN, ACCESS_TOKEN, EMAIL, PASSWORD)


@dataclass(frozen=True)
class SessionCounterRecord:
    """The highest refresh counter a browser ever held for a session."""

    browser: int
    session_id: str
    counter: int


RECORD_TYPES: dict[str, type] = {
    "requests": RequestRecord,
    "page_loads": PageLoadRecord,
    "sign_outs": SignOutRecord,
    "sign_ins": SignInRecord,
    "logouts": LogoutRecord,
    "revocations": RevocationRecord,
    "replays": ReplayRecord,
    "alert_checks": AlertCheckRecord,
    "session_counters": SessionCounterRecord,
    "secrets": SecretRecord,
}


@dataclass
class Recorder:
    """The Locust process's notebook: every browser appends to it (greenlets, one thread)."""

    requests: list[RequestRecord] = field(default_factory=list)
    page_loads: list[PageLoadRecord] = field(default_factory=list)
    sign_outs: list[SignOutRecord] = field(default_factory=list)
    sign_ins: list[SignInRecord] = field(default_factory=list)
    logouts: list[LogoutRecord] = field(default_factory=list)
    revocations: list[RevocationRecord] = field(default_factory=list)
    replays: list[ReplayRecord] = field(default_factory=list)
    alert_checks: list[AlertCheckRecord] = field(default_factory=list)
    session_counters: list[SessionCounterRecord] = field(default_factory=list)
    secrets: list[SecretRecord] = field(default_factory=list)
    _secrets_noted: set[tuple[str, str]] = field(default_factory=set)

    def note_secret(self, kind: str, value: str | None) -> None:
        """Remember a token, address or password a browser held (once each)."""
        if value and (kind, value) not in self._secrets_noted:
            self._secrets_noted.add((kind, value))
            self.secrets.append(SecretRecord(kind, value))

    def dump(self, path: Path) -> None:
        data: dict[str, Any] = {
            name: [dataclasses.asdict(record) for record in getattr(self, name)] for name in RECORD_TYPES
        }
        path.write_text(json.dumps(data))


@dataclass(frozen=True)
class Observations:
    """Everything the browsers recorded, read back."""

    requests: tuple[RequestRecord, ...]
    page_loads: tuple[PageLoadRecord, ...]
    sign_outs: tuple[SignOutRecord, ...]
    sign_ins: tuple[SignInRecord, ...]
    logouts: tuple[LogoutRecord, ...]
    revocations: tuple[RevocationRecord, ...]
    replays: tuple[ReplayRecord, ...]
    alert_checks: tuple[AlertCheckRecord, ...]
    session_counters: tuple[SessionCounterRecord, ...]
    secrets: tuple[SecretRecord, ...]

    @classmethod
    def load(cls, path: Path) -> Observations:
        data = json.loads(path.read_text())
        return cls(**{name: tuple(kind(**row) for row in data.get(name, [])) for name, kind in RECORD_TYPES.items()})
