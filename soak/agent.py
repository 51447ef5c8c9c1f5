"""The person behind one browser: signs in, loads pages and lets their scripts run, comes
back to a tab, signs out and in again, signs another of its devices out, or has its
cookies copied. Every outcome goes to the recorder; nothing here judges it.
"""

from __future__ import annotations

import random
import time

import gevent
from locust import User
from locust.clients import HttpSession

from .browser import Browser, Visit, new_cookie_jar_session
from .household import PASSWORD, Household, Role, role_of
from .observations import (
    EMAIL,
    AlertCheckRecord,
    LoadPlan,
    LogoutRecord,
    PageLoadRecord,
    Recorder,
    RevocationRecord,
    SignInRecord,
    SignOutRecord,
)
from .observations import PASSWORD as PASSWORD_SECRET
from .pages import BUSY_WORDS, flash_messages, form_csrf_token, listed_session_ids, reuse_alert_dismiss_paths
from .thief import (
    GRACE_MARGIN,
    CopiedCookie,
    awaiting_proof,
    awaiting_rotation,
    copy_refresh_cookie,
    holding_still_for,
    replay_when_due,
)

# What the account page's scripts ask for (static/js/account.js), and two more a page
# might: each page load fires 4 to 8 of them at once.
SCRIPT_PATHS = ("/api/session", "/api/security-events", "/api/me")
SCRIPT_CALLS = (4, 8)
# Each action's weight; some only for some roles.
ACTIONS = {
    "account": 30,
    "home": 10,
    "devices": 12,
    "refocus": 25,
    "sign_out_and_in": 3,
    "revoke_phone": 30,
    "steal": 30,
}
THEFT_VARIANTS = ("previous", "undelivered", "older")
# Seconds between two of these, at least.
REVOCATION_COOLDOWN = (25, 45)
THEFT_COOLDOWN = (10, 25)
MAX_SIGN_IN_ATTEMPTS = 30
# A sign-in under way at the deadline may finish within this.
WIND_DOWN = 20


class Agent:
    def __init__(self, user: User, *, plan: LoadPlan, household: Household, recorder: Recorder):
        self.user = user
        self.plan = plan
        self.household = household
        self.recorder = recorder
        self.index = household.next_index()
        self.role = role_of(self.index, plan.users)
        self.rng = random.Random(f"{plan.run_id}-{self.index}")
        self.account = household.account_of(self.index)
        self.browser = Browser(self.index, self.new_jar(), recorder)
        self.remember = self.rng.random() < 0.5
        self.signed_in = False
        self.theft: CopiedCookie | None = None
        self.thefts = 0
        self.alert_check_for: str | None = None
        now = time.time()
        self.next_revocation_at = now + self.rng.uniform(*REVOCATION_COOLDOWN)
        self.next_theft_at = now + self.rng.uniform(*THEFT_COOLDOWN)
        household.browsers[self.index] = self

    def new_jar(self) -> HttpSession:
        return new_cookie_jar_session(
            self.plan.base_url, self.plan.ca_file, self.user, self.household.user_agent(self.index)
        )

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        if self.role is Role.PHONE:
            # The laptop creates the account; the phone signs in to it.
            self.account.registered.wait(timeout=max(0.0, self.plan.deadline - time.time()))
            self.sign_in(register=False)
        else:
            self.sign_in(register=True)
            self.account.registered.set()

    def step(self) -> bool:
        """One action and the pause after it; False once the soak is over for this browser."""
        if time.time() >= self.plan.deadline:
            return False
        if not self.signed_in:
            gevent.sleep(self.rng.uniform(1, 3))
            self.sign_in(register=False)
            return True
        action = self.choose_action()
        getattr(self, f"do_{action}")()
        gevent.sleep(self.think_time())
        return True

    def think_time(self) -> float:
        """A pause of 1 to SOAK_THINK_SECONDS; longer while a thief waits for this
        browser's latest rotation to leave the grace window (soak/thief.py). While a
        one-ahead copy waits for its case: a pause past the access cookie's life before
        the next rotation (a tab left and come back to), and for an "undelivered" one a
        short one once a grace answer's access cookie is kept beside the new refresh cookie."""
        copy = self.theft
        if copy is not None and holding_still_for(copy, self.browser):
            return self.plan.reuse_grace + 2 * GRACE_MARGIN + self.rng.uniform(0, 2)
        if copy is not None and awaiting_proof(copy, self.browser):
            return self.rng.uniform(0.2, 1.0)
        if copy is not None and awaiting_rotation(copy, self.browser):
            return self.plan.access_token_ttl + self.rng.uniform(0.5, 2.5)
        return self.rng.uniform(1, self.plan.think_seconds)

    def choose_action(self) -> str:
        now = time.time()
        allowed = dict(ACTIONS)
        if self.browser.page_csrf is None:
            del allowed["refocus"]
        if self.role is not Role.LAPTOP or now < self.next_revocation_at:
            del allowed["revoke_phone"]
        if self.role is not Role.VICTIM or self.theft is not None or now < self.next_theft_at:
            del allowed["steal"]
        # A phone is signed out by its laptop, and a victim waits for its thief: their own
        # sign-out would muddle whose doing a sign-out was.
        if self.role is Role.PHONE or self.theft is not None:
            del allowed["sign_out_and_in"]
        if self.theft is not None and awaiting_rotation(self.theft, self.browser):
            if self.theft.variant == "undelivered" and "refocus" in allowed:
                # Back to the open page: its scripts' requests share the rotation.
                return "refocus"
            if self.theft.variant == "previous":
                # Back with a navigation: the page's own request rotates alone.
                allowed.pop("refocus", None)
        names = list(allowed)
        return self.rng.choices(names, weights=[allowed[name] for name in names])[0]

    # --- actions -----------------------------------------------------------------------

    def do_account(self) -> None:
        self.page_load("/account")

    def do_home(self) -> None:
        self.page_load("/")

    def do_devices(self) -> None:
        self.page_load("/account/sessions")

    def do_refocus(self) -> None:
        """The tab comes back into view: the page's scripts ask again, with no navigation
        first, so an expired access token meets several requests at once."""
        started_at, started = time.time(), time.perf_counter()
        calls = self.browser.run_scripts(self.script_paths())
        sign_out = self.browser.sign_out_seen_by_scripts(calls)
        if sign_out is not None:
            self.signed_out(self.browser.follow_notice_link(sign_out))
        self.recorder.page_loads.append(
            PageLoadRecord(
                browser=self.index,
                path="refocus",
                started_at=started_at,
                ended_at=time.time(),
                page_ms=None,
                total_ms=(time.perf_counter() - started) * 1000,
                fetches=len(calls),
                outcome="signed_out" if sign_out else "ok",
            )
        )

    def do_sign_out_and_in(self) -> None:
        session_id = self.browser.session_id()
        answer = self.browser.post_form(
            "/auth/logout", {"csrf_token": self.browser.page_csrf or ""}, from_page=self.browser.page_url or "/"
        )
        self.recorder.logouts.append(
            LogoutRecord(self.index, session_id, answer.sent_at, answer.received_at, answer.status)
        )
        if answer.to_sign_in:
            self.browser.open_form(answer.location or "/auth/login")
            self.signed_in = False
            self.browser.page_csrf = None

    def do_revoke_phone(self) -> None:
        """Sign this person's phone out from the devices page (its confirmation form)."""
        self.next_revocation_at = time.time() + self.rng.uniform(*REVOCATION_COOLDOWN)
        phone = self.household.browsers.get(self.index + 1)
        if phone is None or not phone.signed_in:
            return
        session_id = phone.browser.session_id()
        visit = self.page_load("/account/sessions")
        if session_id is None or visit is None or visit.outcome != "ok":
            return
        if session_id not in listed_session_ids(visit.body):
            return
        answer = self.browser.post_form(
            f"/account/sessions/{session_id}/revoke",
            {"csrf_token": form_csrf_token(visit.body) or ""},
            from_page="/account/sessions",
            name="/account/sessions/[id]/revoke",
        )
        gone = False
        if answer.status in (302, 303) or (answer.retried and answer.status == 404):
            after = self.page_load("/account/sessions")
            gone = after is not None and after.outcome == "ok" and session_id not in listed_session_ids(after.body)
        self.recorder.revocations.append(
            RevocationRecord(
                browser=self.index,
                target_browser=self.index + 1,
                session_id=session_id,
                sent_at=answer.sent_at,
                done_at=answer.received_at,
                status=answer.status,
                retried=answer.retried,
                gone_from_list=gone,
            )
        )

    def do_steal(self) -> None:
        """Malware copies this browser's refresh cookie; a thief replays it later."""
        # Each case in turn, the rarer ones first (a one-ahead case that does not come
        # about turns into "older" at the victim's next rotation).
        copy = copy_refresh_cookie(self.browser, variant=THEFT_VARIANTS[self.thefts % len(THEFT_VARIANTS)])
        if copy is None:
            return
        self.thefts += 1
        self.theft = copy
        gevent.spawn(self.run_thief, copy)

    def run_thief(self, copy: CopiedCookie) -> None:
        def still_on_copied_session() -> bool:
            return self.signed_in and self.browser.session_id() == copy.token.session_id

        def new_jar():
            jar = self.new_jar()
            jar.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) curl-like thief"
            return jar

        def copied_again(fresh: CopiedCookie) -> None:
            self.theft = fresh

        try:
            record = replay_when_due(
                copy,
                self.browser,
                still_on_copied_session=still_on_copied_session,
                new_jar=new_jar,
                plan=self.plan,
                recorder=self.recorder,
                copied_again=copied_again,
            )
            if record is not None and not record.signed_in and not record.new_cookies:
                # Refused: the app should have told the account (checked at the next sign-in).
                self.alert_check_for = copy.token.session_id
        finally:
            self.theft = None
            self.next_theft_at = time.time() + self.rng.uniform(*THEFT_COOLDOWN)

    # --- pages -------------------------------------------------------------------------

    def script_paths(self) -> list[str]:
        return [self.rng.choice(SCRIPT_PATHS) for _ in range(self.rng.randint(*SCRIPT_CALLS))]

    def page_load(self, path: str) -> Visit | None:
        """A navigation, then the page's scripts; None when the browser was not signed in."""
        started_at, started = time.time(), time.perf_counter()
        visit = self.browser.visit(path)
        fetches = 0
        outcome = visit.outcome
        if visit.outcome == "ok":
            calls = self.browser.run_scripts(self.script_paths())
            fetches = len(calls)
            sign_out = self.browser.sign_out_seen_by_scripts(calls)
            if sign_out is not None:
                self.signed_out(self.browser.follow_notice_link(sign_out))
                outcome = "signed_out"
        elif visit.outcome == "signed_out":
            self.signed_out(self.browser.sign_out_seen_on(visit, path))
        self.recorder.page_loads.append(
            PageLoadRecord(
                browser=self.index,
                path=path,
                started_at=started_at,
                ended_at=time.time(),
                page_ms=visit.page_ms,
                total_ms=(time.perf_counter() - started) * 1000,
                fetches=fetches,
                outcome=outcome,
            )
        )
        return visit

    def signed_out(self, record: SignOutRecord) -> None:
        self.recorder.sign_outs.append(record)
        self.signed_in = False
        self.browser.page_csrf = None

    # --- signing in --------------------------------------------------------------------

    def sign_in(self, *, register: bool) -> None:
        """Fill in the sign-in (or registration) form until it lets this browser in,
        waiting as asked (Retry-After) when the app is busy or away; then land."""
        form_path = "/auth/register" if register else "/auth/login"
        attempts = busy = unavailable = 0
        started_at = time.time()
        landing: str | None = None
        detail = ""
        while attempts < MAX_SIGN_IN_ATTEMPTS and time.time() < self.plan.deadline + WIND_DOWN:
            attempts += 1
            page = self.browser.open_form(form_path)
            if page.status in (302, 303) and not page.to_sign_in:
                landing = page.location  # already signed in: the form sends it on
                break
            token = form_csrf_token(page.body) if page.status == 200 else None
            if token is None:
                unavailable += 1
                gevent.sleep(page.retry_after or 1)
                continue
            data = {"csrf_token": token, "email": self.account.email, "password": PASSWORD}
            self.recorder.note_secret(EMAIL, self.account.email)
            self.recorder.note_secret(PASSWORD_SECRET, PASSWORD)
            if register:
                data["confirm"] = PASSWORD
            elif self.remember:
                data["remember"] = "y"
            answer = self.browser.post_form(form_path, data, from_page=form_path)
            if answer.status in (302, 303) and not (answer.location or "").startswith("/auth/"):
                landing = answer.location
                break
            if answer.status == 503 and BUSY_WORDS in answer.body:
                busy += 1
                gevent.sleep(answer.retry_after or 1)
                continue
            if answer.status in (0, 429, 502, 503, 504):
                unavailable += 1
                gevent.sleep(answer.retry_after or 1)
                continue
            if register and answer.status == 200 and "already exists" in answer.body:
                # An earlier attempt created the account and its answer was lost.
                register, form_path = False, "/auth/login"
                continue
            detail = f"POST {form_path}: {answer.status} {' | '.join(flash_messages(answer.body))}"[:300]
            break
        ok = landing is not None
        if ok:
            self.signed_in = True
        self.recorder.sign_ins.append(
            SignInRecord(
                browser=self.index,
                form="register" if register else "login",
                ok=ok,
                attempts=attempts,
                busy=busy,
                unavailable=unavailable,
                started_at=started_at,
                ended_at=time.time(),
                session_id=self.browser.session_id() if ok else None,
                detail=detail or ("" if ok else "gave up"),
            )
        )
        if not ok:
            return
        self.page_load(landing if landing and landing.startswith("/") else "/account")
        if self.signed_in and self.alert_check_for is not None:
            self.check_reuse_alert(self.alert_check_for)

    def check_reuse_alert(self, session_id: str) -> None:
        """After a caught replay: the devices page should name it; "This was me" clears it."""
        self.alert_check_for = None
        visit = self.page_load("/account/sessions")
        if visit is None or visit.outcome != "ok":
            return
        dismiss_paths = reuse_alert_dismiss_paths(visit.body)
        token = form_csrf_token(visit.body) or ""
        dismissed = True
        for path in dismiss_paths:
            answer = self.browser.post_form(
                path, {"csrf_token": token}, from_page="/account/sessions", name="/account/alerts/[id]/dismiss"
            )
            dismissed &= answer.status in (302, 303)
        self.recorder.alert_checks.append(
            AlertCheckRecord(self.index, session_id, alert_seen=bool(dismiss_paths), dismissed=dismissed)
        )
