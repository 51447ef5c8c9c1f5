"""One browser: a cookie jar, and what the browser and its pages' scripts do with it.

The jar is a Locust `HttpSession` (requests), which behaves as a browser's does in the ways
that matter here: the cookies of a request are read from the jar when it is sent, each
answer's `Set-Cookie` is applied the moment it arrives (parallel answers in the order
they arrive), `Max-Age` and deletions are honoured (an expired access cookie is no longer
sent), and `Secure` cookies go only over HTTPS. Redirects are followed by hand, as a
page would see them. At most six connections to the host at once, like a browser.

A page's scripts are modelled on static/js/session-fetch.js: a 401 calls `POST
/auth/refresh` once and retries once on 204; 401s that arrive together share one refresh
call; a 401 after a refresh started since the request was sent takes that refresh's
outcome. What the scripts cannot mend is the page's notice (one per page, shown by the
first call that gives up): the reason the 401 gave (`{"error": "session_expired",
"message": ...}`), else "Your session has expired.", with a "Sign in again" link to the
sign-in page and back (`signInUrl`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote

import gevent
from gevent.event import AsyncResult
from locust import User
from locust.clients import HttpSession, LocustHttpAdapter

from .observations import (
    ACCESS_TOKEN,
    FETCH,
    FORM,
    PAGE,
    REFRESH,
    REFRESH_TOKEN,
    REPLAY,
    VIA_HOME,
    VIA_PAGE,
    VIA_SCRIPT,
    Recorder,
    RequestRecord,
    SignOutRecord,
)
from .pages import (
    ACCESS_COOKIE,
    BUSY_WORDS,
    REFRESH_COOKIE,
    SCRIPT_EXPIRED_MESSAGE,
    SIGN_IN_PATH,
    AccessClaims,
    RefreshToken,
    auth_cookie_change,
    csrf_meta,
    flash_messages,
    parse_set_cookies,
    reason_given,
    reason_named,
)

# A request the app has not answered in this long is given up (a database restart's
# connect timeout is 5 s; gunicorn's heartbeat 30 s).
REQUEST_TIMEOUT = 45
CONNECTIONS_PER_HOST = 6
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# How a rotation was proven to have reached the browser (the app then counts it delivered,
# webapp/sessions.py `authenticate`): a request signed in by the access token issued with
# it, or by an older access token (a grace answer's) beside its refresh token.
BY_ACCESS = "access token"
BY_REFRESH = "refresh cookie"


def new_cookie_jar_session(base_url: str, ca_file: str, user: User, user_agent: str) -> HttpSession:
    """A Locust HttpSession that trusts the soak's certificate authority, with a browser's
    connection limit per host and its User-Agent."""
    http = HttpSession(base_url=base_url, request_event=user.environment.events.request, user=user)
    adapter = LocustHttpAdapter(
        pool_manager=None, pool_connections=1, pool_maxsize=CONNECTIONS_PER_HOST, pool_block=True
    )
    http.mount("https://", adapter)
    # Nothing from the environment: no proxy (traffic goes straight to 127.0.0.1), and
    # no CA bundle (REQUESTS_CA_BUNDLE would override ours).
    http.trust_env = False
    http.verify = ca_file
    http.headers["User-Agent"] = user_agent
    return http


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (the connection failed)
    location: str | None
    body: str
    set_cookies: Mapping[str, str | None]
    retry_after: float | None
    error: str | None
    sent_at: float
    received_at: float
    session_id: str | None  # the session the request's cookies named
    retried: bool = False  # sent a second time: the first try's connection failed

    @property
    def to_sign_in(self) -> bool:
        return self.status in (301, 302, 303) and (self.location or "").startswith(SIGN_IN_PATH)


@dataclass(frozen=True)
class Visit:
    """A page as the browser shows it: signed in, sent to sign in, or an error."""

    answer: Answer
    outcome: str  # ok, signed_out, unavailable, failed
    body: str
    page_ms: float


@dataclass(frozen=True)
class Fetched:
    """One session-fetch.js call: its final answer, and whether it gave up (the page then
    shows its notice)."""

    path: str
    first: Answer
    final: Answer
    expired: bool


def signed_in_answer(kind: str, status: int, body: str, location: str | None) -> bool | None:
    """Whether an answer served a signed-in request (None when the answer does not say)."""
    if kind in (PAGE, REPLAY):
        if status == 200:
            return csrf_meta(body) is not None
        if status in (301, 302, 303):
            return False if (location or "").startswith(SIGN_IN_PATH) else None
        return None
    if kind == FETCH:
        return {200: True, 401: False}.get(status)
    if kind == REFRESH:
        return {204: True, 401: False}.get(status)
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


@dataclass
class Browser:
    """One browser (one cookie jar) of the soak, recording every request it sends."""

    index: int
    http: HttpSession
    recorder: Recorder
    actor: str = "browser"
    # The page its scripts run in: their Referer, and the CSRF token of its meta tag.
    page_url: str | None = None
    page_csrf: str | None = None
    # session-fetch.js's notice on the current page (None: not shown), cleared by a navigation,
    # and the reason's name its link to the sign-in page carries.
    notice: str | None = None
    notice_why: str | None = None
    # The highest refresh counter held per session, when the jar first held each, and the
    # (session, counter) pairs the app counts as delivered, with how the first proof came
    # (BY_ACCESS or BY_REFRESH).
    max_counter: dict[str, int] = field(default_factory=dict)
    counter_seen_at: dict[tuple[str, int], float] = field(default_factory=dict)
    delivered: dict[tuple[str, int], str] = field(default_factory=dict)
    # session-fetch.js's shared refresh call.
    _refresh_in_flight: AsyncResult | None = None
    _latest_refresh: AsyncResult | None = None
    _refreshes_started: int = 0

    @property
    def base_url(self) -> str:
        return self.http.base_url

    # --- the jar -----------------------------------------------------------------------

    def cookie(self, name: str) -> str | None:
        """The cookie's value as the next request would send it (an expired one is not sent)."""
        now = time.time()
        for cookie in self.http.cookies:
            if cookie.name == name and not cookie.is_expired(now):
                return cookie.value
        return None

    def refresh_token(self) -> RefreshToken | None:
        return RefreshToken.parse(self.cookie(REFRESH_COOKIE))

    def access_claims(self) -> AccessClaims | None:
        return AccessClaims.parse(self.cookie(ACCESS_COOKIE))

    def session_id(self) -> str | None:
        refresh, access = self.refresh_token(), self.access_claims()
        if access is not None:
            return access.session_id
        return refresh.session_id if refresh is not None else None

    # --- the wire ----------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        name: str | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request, sent again once if its connection failed before any answer (a
        browser does so on a kept-alive connection the server had closed)."""
        answer = self._send_once(method, path, kind=kind, name=name, data=data, headers=headers, retry=False)
        if answer.status == 0:
            retried = self._send_once(method, path, kind=kind, name=name, data=data, headers=headers, retry=True)
            answer = replace(retried, retried=True)
        return answer

    def _send_once(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        name: str | None,
        data: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        retry: bool,
    ) -> Answer:
        refresh, access = self.refresh_token(), self.access_claims()
        if access is not None and access.expires_at <= time.time():
            access = None  # sent, but the app will not sign anybody in with it
        session_id = self.session_id()
        sent_at, started = time.time(), time.perf_counter()
        response = self.http.request(
            method,
            path,
            name=name or path.split("?", 1)[0],
            data=data,
            headers=dict(headers or {}),
            allow_redirects=False,
            timeout=REQUEST_TIMEOUT,
        )
        ms = (time.perf_counter() - started) * 1000
        received_at = time.time()
        error = getattr(response, "error", None) if response.status_code == 0 else None
        raw = getattr(response, "raw", None)
        set_cookie_headers = raw.headers.getlist("Set-Cookie") if raw is not None and raw.headers else []
        set_cookies = parse_set_cookies(set_cookie_headers)
        body = response.text if response.status_code else ""
        answer = Answer(
            status=response.status_code,
            location=response.headers.get("Location") if response.status_code else None,
            body=body,
            set_cookies=set_cookies,
            retry_after=_retry_after(response.headers) if response.status_code else None,
            error=None if error is None else f"{type(error).__name__}: {error}"[:300],
            sent_at=sent_at,
            received_at=received_at,
            session_id=session_id,
        )
        rotated, grace, cleared = auth_cookie_change(set_cookies)
        signed_in = signed_in_answer(kind, answer.status, body, answer.location)
        self._learn(answer, refresh, access, signed_in=signed_in, rotated=rotated, grace=grace)
        note = answer.error
        if answer.status == 503 and BUSY_WORDS in body:
            note = "busy"
        self.recorder.requests.append(
            RequestRecord(
                browser=self.index,
                actor=self.actor,
                kind=kind,
                method=method,
                path=path.split("?", 1)[0],
                status=answer.status,
                sent_at=sent_at,
                received_at=received_at,
                ms=ms,
                session_id=session_id,
                counter=refresh.counter if refresh else None,
                access_counter=access.counter if access else None,
                signed_in=signed_in,
                rotated=rotated,
                grace=grace,
                cleared=cleared,
                note=note,
                retry=retry,
            )
        )
        return answer

    def _learn(
        self,
        answer: Answer,
        refresh: RefreshToken | None,
        access: AccessClaims | None,
        *,
        signed_in: bool | None,
        rotated: bool,
        grace: bool,
    ) -> None:
        """What the soak needs to know later about this browser's sessions, and the
        tokens that no log line may hold."""
        self.recorder.note_secret(REFRESH_TOKEN, answer.set_cookies.get(REFRESH_COOKIE))
        self.recorder.note_secret(ACCESS_TOKEN, answer.set_cookies.get(ACCESS_COOKIE))
        new_refresh = RefreshToken.parse(answer.set_cookies.get(REFRESH_COOKIE))
        if new_refresh is not None:
            key = (new_refresh.session_id, new_refresh.counter)
            self.counter_seen_at.setdefault(key, answer.received_at)
            previous = self.max_counter.get(new_refresh.session_id, -1)
            self.max_counter[new_refresh.session_id] = max(previous, new_refresh.counter)
        if signed_in and access is not None and not rotated and not grace:
            # Signed in by its access token alone: the app has recorded that this token's
            # rotation reached the browser, and so has the refresh cookie sent beside it
            # when that is a later one of the same session (sessions.authenticate).
            self.delivered.setdefault((access.session_id, access.counter), BY_ACCESS)
            if refresh is not None and refresh.session_id == access.session_id and refresh.counter > access.counter:
                self.delivered.setdefault((refresh.session_id, refresh.counter), BY_REFRESH)

    # --- pages -------------------------------------------------------------------------

    def visit(self, path: str, *, kind: str = PAGE) -> Visit:
        """Navigate to `path`. Sent to the sign-in page, the browser goes there (the page
        says why, if the app knows); the home page may show itself signed out instead."""
        started = time.perf_counter()
        name = f"replay {path}" if kind == REPLAY else None
        answer = self.send("GET", path, kind=kind, name=name, headers={"Accept": PAGE_ACCEPT})
        page_ms = (time.perf_counter() - started) * 1000
        if answer.to_sign_in:
            landing = self.send(
                "GET", answer.location or SIGN_IN_PATH, kind=FORM, name="/auth/login", headers={"Accept": PAGE_ACCEPT}
            )
            self.page_url, self.page_csrf, self.notice = f"{self.base_url}{SIGN_IN_PATH}", None, None
            return Visit(answer, "signed_out", landing.body, page_ms)
        if answer.status == 200:
            self.page_url, self.page_csrf, self.notice = f"{self.base_url}{path}", csrf_meta(answer.body), None
            return Visit(answer, "ok" if self.page_csrf else "signed_out", answer.body, page_ms)
        if answer.status in (0, 502, 503, 504):
            return Visit(answer, "unavailable", answer.body, page_ms)
        return Visit(answer, "failed", answer.body, page_ms)

    def sign_out_seen_on(self, visit: Visit, path: str) -> SignOutRecord:
        """The record of a page that found this browser signed out."""
        messages = flash_messages(visit.body)
        return SignOutRecord(
            browser=self.index,
            session_id=visit.answer.session_id,
            path=path,
            via=VIA_PAGE if visit.answer.to_sign_in else VIA_HOME,
            message=" | ".join(messages) or None,
            sent_at=visit.answer.sent_at,
            received_at=visit.answer.received_at,
            detail=f"GET {path}: {visit.answer.status} {visit.answer.location or ''}".strip(),
        )

    # --- page scripts (session-fetch.js) -----------------------------------------------

    def run_scripts(self, paths: Sequence[str]) -> list[Fetched]:
        """The page's scripts fire `paths` at once and wait for them all."""
        calls = [gevent.spawn(self.session_fetch, path) for path in paths]
        gevent.joinall(calls, raise_error=True)
        return [call.value for call in calls]

    def session_fetch(self, path: str) -> Fetched:
        refreshes_before = self._refreshes_started
        first = self.send("GET", path, kind=FETCH, headers=self._script_headers())
        if first.status != 401:
            return Fetched(path, first, first, expired=False)
        reason = reason_given(first.body)
        if self._refreshes_started != refreshes_before and self._latest_refresh is not None:
            refreshed = self._latest_refresh.get()
        else:
            refreshed = self.refresh_session()
        final = first
        if refreshed:
            final = self.send("GET", path, kind=FETCH, headers=self._script_headers())
            if final.status != 401:
                return Fetched(path, first, final, expired=False)
        self.show_notice(reason or SCRIPT_EXPIRED_MESSAGE, reason_named(first.body) if reason else None)
        return Fetched(path, first, final, expired=True)

    def show_notice(self, message: str, why: str | None = None) -> None:
        """session-fetch.js's `showSessionExpired`: once per page, the first caller's words,
        and the reason's name its "Sign in again" link carries."""
        if self.notice is None:
            self.notice, self.notice_why = message, why

    def refresh_session(self) -> bool:
        """`POST /auth/refresh`, one call on the wire for every caller while it runs:
        True on a 2xx answer (`response.ok`), False otherwise or on a network error."""
        if self._refresh_in_flight is None:
            result: AsyncResult = AsyncResult()
            self._refresh_in_flight = self._latest_refresh = result
            self._refreshes_started += 1

            def call() -> None:
                try:
                    headers = {**self._script_headers(), "X-CSRFToken": self.page_csrf or ""}
                    answer = self.send("POST", "/auth/refresh", kind=REFRESH, headers=headers)
                    result.set(200 <= answer.status < 300)
                finally:
                    if not result.ready():
                        result.set(False)
                    self._refresh_in_flight = None

            gevent.spawn(call)
            return result.get()
        return self._refresh_in_flight.get()

    def sign_out_seen_by_scripts(self, fetched: Sequence[Fetched]) -> SignOutRecord | None:
        """The record of the page's notice, if a call gave up: its words, and the call
        that (first, in the page's order) found the browser signed out."""
        for call in fetched:
            if call.expired:
                first = call.first
                path = self.page_url.removeprefix(self.base_url) if self.page_url else "?"
                return SignOutRecord(
                    browser=self.index,
                    session_id=first.session_id,
                    path=path,
                    via=VIA_SCRIPT,
                    message=self.notice,
                    sent_at=first.sent_at,
                    received_at=first.received_at,
                    detail=f"GET {call.path} on {path}: 401, then the refresh and retry gave {call.final.status}",
                )
        return None

    def follow_notice_link(self, record: SignOutRecord) -> SignOutRecord:
        """The person clicks the notice's "Sign in again": the sign-in page, with the way
        back to this page (`signInUrl`); the record gains what that page said."""
        back = self.page_url.removeprefix(self.base_url) if self.page_url else "/"
        why = f"&why={quote(self.notice_why, safe='')}" if self.notice_why else ""
        answer = self.send(
            "GET", f"{SIGN_IN_PATH}?next={quote(back, safe='')}{why}", kind=FORM, headers={"Accept": PAGE_ACCEPT}
        )
        self.page_url, self.page_csrf, self.notice = f"{self.base_url}{SIGN_IN_PATH}", None, None
        messages = flash_messages(answer.body) if answer.status == 200 else []
        landing = " | ".join(messages) or (None if answer.status == 200 else f"answered {answer.status}")
        return replace(record, landing_message=landing)

    def _script_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Referer": self.page_url or f"{self.base_url}/"}

    # --- forms -------------------------------------------------------------------------

    def post_form(self, path: str, data: Mapping[str, str], *, from_page: str, name: str | None = None) -> Answer:
        """Submit a form of the page at `from_page` (a path, or the page's URL): its
        Referer, which the CSRF check over HTTPS wants same-origin."""
        referer = from_page if from_page.startswith("https://") else f"{self.base_url}{from_page}"
        headers = {"Referer": referer, "Accept": PAGE_ACCEPT}
        return self.send("POST", path, kind=FORM, name=name, data=data, headers=headers)

    def open_form(self, path: str) -> Answer:
        return self.send("GET", path, kind=FORM, headers={"Accept": PAGE_ACCEPT})
