"""Judging a soak: what the browsers saw, against what the soak did to them (revocations,
replays, sign-outs), the fault windows and the database.

- A sign-out is expected only when the soak caused it: the browser's session was signed
  out from its person's other device, or a thief replayed a copy of its refresh token,
  and the request that found it signed out was answered after that began. Every other
  time a browser that believed itself signed in was sent to sign in, shown the home page
  signed out, or got a 401 that session-fetch.js's refresh and retry could not mend, it
  is a false sign-out. An expected one is told the right reason when the page it landed
  on says so; found by a page script, when the script's notice says so and so does the
  sign-in page its "Sign in again" link opens.
- A 5xx is explained only as a 503 whose request overlapped the PostgreSQL restart, or
  the sign-in form's load shedding (503 "Signing in is busy", MAX_CONCURRENT_PASSWORD_CHECKS
  slots full), which the browser waits out as told. A connection that failed twice in a
  row (a browser retries once) is explained only around the killed worker.
- A replay is caught when its answer signed the thief out and cleared the cookies, set
  no new ones, and the database ended the session as reuse. The thief makes only the
  replays the app promises to catch (soak/thief.py), each of the three cases at least once.
- What the app told its operators (soak/telemetry.py) must agree: rotations it counted
  with the database's counters, reuse detections with the replays caught, 503s with the
  browsers' 503s, no other 5xx; every log line of the app JSON, and none holding a token,
  the password or an email address the browsers used.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .consistency import REASON_REUSE, REASON_REVOKED_BY_USER, Consistency
from .faults import POSTGRES_RESTART, WORKER_KILL, FaultWindow
from .observations import FETCH, PAGE, REFRESH, VIA_SCRIPT, Observations, RequestRecord, SignOutRecord
from .pages import REUSE_WORDS, REVOKED_WORDS
from .telemetry import Telemetry

# Around a fault window: scheduling slack between the soak's clock readings and the app's.
WINDOW_SLACK = 1.0
# After a worker's death, connections to it fail until the browser opens new ones.
KILL_AFTERMATH = 3.0
# The thief's cases (soak/thief.py).
REPLAY_CASES = ("older", "previous", "undelivered")
CAUSE_REVOKED = "revoked from another device"
CAUSE_REUSE = "replayed refresh token"


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Latency:
        ordered = sorted(values)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 99))


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(share / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    goal: str
    met: bool


@dataclass(frozen=True)
class JudgedSignOut:
    record: SignOutRecord
    cause: str | None  # None: a false sign-out
    told_why: bool  # the app's message named the cause (a script's: its notice and the sign-in page)
    notice_told: bool  # a script's notice named the cause (False for other ways)
    landing_told: bool  # the sign-in page a script's notice links to named it (False for other ways)


@dataclass(frozen=True)
class CrossCheck:
    """One comparison of the app's own account (metrics, log) with the soak's."""

    name: str
    app: str
    soak: str
    note: str


@dataclass(frozen=True)
class Telemetric:
    """The metrics' and the log's figures the report shows."""

    scrape_error: str | None
    unauthorised_scrape: int | None
    rotations_counted: float
    rotations_in_database: int
    rotation_slack: int  # answers lost with the killed worker or to the restart's 5xx
    grace_answers_counted: float
    reuse_counted: float
    replays_caught: int
    reuse_events_in_database: int
    responses_by_status: dict[str, float]
    answers_seen: int
    health_checks: int
    lost_in_kill: int
    sign_ins_counted: dict[str, float]
    revocations_counted: dict[str, float]
    checks: tuple[CrossCheck, ...]


@dataclass(frozen=True)
class Verdict:
    seconds: float
    requests: int
    page_loads: int
    sign_outs: tuple[JudgedSignOut, ...]
    unexplained_5xx: tuple[RequestRecord, ...]
    outage_503s: int
    busy_503s: int
    retried_connections: int
    failed_connections_in_kill: int
    unexplained_connection_failures: tuple[RequestRecord, ...]
    replays: int
    replays_caught: int
    replays_by_variant: dict[str, int]
    caught_by_variant: dict[str, int]
    missed_replays: tuple[str, ...]
    replay_answers: dict[str, int]
    used_after_end: tuple[str, ...]
    revocations: int
    revocation_problems: tuple[str, ...]
    alert_checks: int
    alerts_seen: int
    sign_ins: int
    failed_sign_ins: tuple[str, ...]
    sign_in_retries_busy: int
    sign_in_retries_unavailable: int
    rotations: int
    rotations_per_second: float
    client_rotations: int
    grace_answers: int
    navigation: Latency
    page_load: Latency
    refocus: Latency
    sub_request: Latency
    rotating_request: Latency
    outcomes: dict[str, int]
    telemetric: Telemetric
    telemetry: Telemetry
    targets: tuple[Target, ...]

    @property
    def passed(self) -> bool:
        return all(target.met for target in self.targets)

    @property
    def false_sign_outs(self) -> tuple[JudgedSignOut, ...]:
        return tuple(judged for judged in self.sign_outs if judged.cause is None)


def _overlaps(record: RequestRecord, window: FaultWindow, *, after: float = 0.0) -> bool:
    return record.sent_at <= window.ended_at + WINDOW_SLACK + after and record.received_at >= (
        window.started_at - WINDOW_SLACK
    )


def _earliest(records: Iterable[RequestRecord]) -> dict[str, float]:
    earliest: dict[str, float] = {}
    for record in records:
        if record.session_id is not None:
            earliest[record.session_id] = min(earliest.get(record.session_id, record.sent_at), record.sent_at)
    return earliest


def judge_sign_outs(seen: Observations) -> tuple[JudgedSignOut, ...]:
    """Each sign-out with the soak's action that explains it, if one does."""
    # When each cause began: the first request of it that was sent (a retried one counts
    # from its first try, which the app may have carried out).
    revoke_posts = [r for r in seen.requests if r.method == "POST" and r.path.endswith("/revoke")]
    revoked_from: dict[str, float] = {}
    for record in revoke_posts:
        session_id = record.path.split("/")[3]
        revoked_from[session_id] = min(revoked_from.get(session_id, record.sent_at), record.sent_at)
    replayed_from = _earliest(r for r in seen.requests if r.actor == "thief")
    judged = []
    for record in seen.sign_outs:
        cause, words = None, None
        sid = record.session_id
        if sid is not None and sid in revoked_from and revoked_from[sid] <= record.received_at:
            cause, words = CAUSE_REVOKED, REVOKED_WORDS
        elif sid is not None and sid in replayed_from and replayed_from[sid] <= record.received_at:
            cause, words = CAUSE_REUSE, REUSE_WORDS
        said = words is not None and words in (record.message or "")
        if record.via == VIA_SCRIPT:
            landed = words is not None and words in (record.landing_message or "")
            judged.append(JudgedSignOut(record, cause, said and landed, notice_told=said, landing_told=landed))
        else:
            judged.append(JudgedSignOut(record, cause, said, notice_told=False, landing_told=False))
    return tuple(judged)


def find_used_after_end(seen: Observations) -> tuple[str, ...]:
    """Signed-in answers to requests sent after the soak saw their session end: after a
    sign-out's answer, a revocation's answer, or a replay's answer that signed the thief out."""
    ended_at: dict[str, tuple[float, str]] = {}

    def ended(session_id: str | None, moment: float, how: str) -> None:
        if session_id is not None and (session_id not in ended_at or moment < ended_at[session_id][0]):
            ended_at[session_id] = (moment, how)

    for logout in seen.logouts:
        if logout.status in (302, 303):
            ended(logout.session_id, logout.done_at, "signed out")
    for revocation in seen.revocations:
        if revocation.done:
            ended(revocation.session_id, revocation.done_at, "revoked")
    for replay in seen.replays:
        if not replay.signed_in and not replay.new_cookies:
            ended(replay.session_id, replay.received_at, "replay caught")
    found = []
    for record in seen.requests:
        if record.signed_in and record.session_id in ended_at:
            moment, how = ended_at[record.session_id]
            if record.sent_at > moment:
                found.append(
                    f"{record.method} {record.path} of browser {record.browser} ({record.actor}) sent "
                    f"{record.sent_at - moment:.2f} s after session {record.session_id} was {how}: "
                    f"answered {record.status}, signed in"
                )
    return tuple(found)


def judge_telemetry(
    telemetry: Telemetry,
    seen: Observations,
    consistency: Consistency,
    *,
    replays_caught: int,
    lost_in_kill: int,
    outage_5xx: int,
) -> tuple[Telemetric, tuple[Target, ...]]:
    """The app's account of the soak against the soak's own."""
    scrape, log = telemetry.scrape, telemetry.log
    rotations = scrape.total("webapp_rotations_total")
    reuse = scrape.total("webapp_refresh_reuse_detections_total")
    statuses = scrape.by_label("webapp_http_responses_total", "status")
    counted_503 = statuses.get("503", 0.0)
    other_5xx = sum(v for k, v in statuses.items() if k.startswith("5") and k != "503")
    seen_503 = sum(1 for r in seen.requests if r.status == 503)
    scrapes = (1 if scrape.status else 0) + (1 if scrape.unauthorised_status is not None else 0)
    answers_seen = sum(1 for r in seen.requests if r.status != 0)
    sign_ins = scrape.by_label("webapp_sign_ins_total", "outcome")
    revocations = scrape.by_label("webapp_revocations_total", "reason")
    # A rotation commits before its request is counted: a worker killed in between, or a
    # commit whose answer the restarting database never sent (it took effect, the request
    # got a 5xx), leaves the database one ahead. Nothing moves the counter uncounted else.
    slack = lost_in_kill + outage_5xx
    db_ahead = consistency.rotations - rotations
    checks = (
        CrossCheck(
            "sign-ins (ok)",
            f"{sign_ins.get('ok', 0):,.0f}",
            f"{consistency.sessions:,} sessions in the database",
            "each sign-in or registration starts one session",
        ),
        CrossCheck(
            "revocations signed_out / revoked_by_user / reuse",
            " / ".join(f"{revocations.get(k, 0):,.0f}" for k in ("signed_out", "revoked_by_user", "reuse")),
            " / ".join(f"{consistency.reasons.get(k, 0):,}" for k in ("signed_out", "revoked_by_user", "reuse")),
            "the database's sessions ended so (one session per action in the soak)",
        ),
        CrossCheck(
            "responses",
            f"{sum(statuses.values()):,.0f}",
            f"{answers_seen:,} answers the browsers got + {telemetry.health_checks} /healthz of the soak's",
            "the scrape's own answer is not in its count; an answer lost with the killed worker is only the app's",
        ),
        CrossCheck(
            "request log lines",
            f"{log.request_lines:,}",
            f"{sum(statuses.values()):,.0f} responses counted + {scrapes} scrape(s) of /metrics",
            "one webapp.request line per response; the scrapes' own answers come after their count",
        ),
    )
    telemetric = Telemetric(
        scrape_error=scrape.error,
        unauthorised_scrape=scrape.unauthorised_status,
        rotations_counted=rotations,
        rotations_in_database=consistency.rotations,
        rotation_slack=slack,
        grace_answers_counted=scrape.total("webapp_grace_answers_total"),
        reuse_counted=reuse,
        replays_caught=replays_caught,
        reuse_events_in_database=consistency.reuse_events,
        responses_by_status=statuses,
        answers_seen=answers_seen,
        health_checks=telemetry.health_checks,
        lost_in_kill=lost_in_kill,
        sign_ins_counted=sign_ins,
        revocations_counted=revocations,
        checks=checks,
    )
    ok = scrape.ok
    leaks = log.leaked_kinds
    targets = (
        Target(
            "metrics: rotations counted = counter increments in the database",
            f"{rotations:,.0f} = {consistency.rotations:,}" if ok else f"no scrape: {scrape.error}",
            f"equal (the database ahead by at most {slack}: answers lost with the killed worker or "
            "to the restart's 5xx)",
            ok and 0 <= db_ahead <= slack,
        ),
        Target(
            "metrics: reuse detections = replays caught",
            f"{reuse:,.0f} = {replays_caught}" if ok else "no scrape",
            "equal",
            ok and reuse == replays_caught,
        ),
        Target(
            "metrics: 503s counted = 503s the browsers got",
            f"{counted_503:,.0f} = {seen_503}" if ok else "no scrape",
            f"equal (the app's ahead by at most {lost_in_kill}: answers lost with the killed worker)",
            ok and 0 <= counted_503 - seen_503 <= lost_in_kill,
        ),
        Target("metrics: 5xx other than 503", f"{other_5xx:,.0f}" if ok else "no scrape", "= 0", ok and not other_5xx),
        Target(
            "log: app lines that are not JSON",
            f"{log.not_json_lines} of {log.app_lines + log.not_json_lines:,}"
            + (f" ({len(log.not_json)} entries)" if log.not_json else ""),
            "= 0",
            not log.not_json and log.app_lines > 0,
        ),
        Target(
            "log: lines holding a token, password or email address the browsers used",
            str(len({leak.line_number for leak in log.leaks})),
            "= 0",
            not leaks,
        ),
    )
    return telemetric, targets


def judge(
    seen: Observations,
    windows: Sequence[FaultWindow],
    consistency: Consistency,
    telemetry: Telemetry,
    *,
    load_seconds: float,
) -> Verdict:
    restarts = [w for w in windows if w.kind == POSTGRES_RESTART and w.applied]
    kills = [w for w in windows if w.kind == WORKER_KILL and w.applied]
    browser_requests = [r for r in seen.requests if r.actor == "browser"]

    unexplained_5xx, outage_503s, busy_503s = [], 0, 0
    for record in seen.requests:
        if record.status < 500:
            continue
        if record.status == 503 and record.note == "busy":
            busy_503s += 1
        elif record.status == 503 and any(_overlaps(record, w) for w in restarts):
            outage_503s += 1
        else:
            unexplained_5xx.append(record)

    retried = sum(1 for r in seen.requests if r.status == 0 and not r.retry)
    failed_in_kill, unexplained_failures = 0, []
    for record in seen.requests:
        if record.status == 0 and record.retry:
            if any(_overlaps(record, w, after=KILL_AFTERMATH) for w in kills):
                failed_in_kill += 1
            else:
                unexplained_failures.append(record)

    sign_outs = judge_sign_outs(seen)
    false_sign_outs = [j for j in sign_outs if j.cause is None]
    untold = [j for j in sign_outs if j.cause is not None and not j.told_why]
    by_script = [j for j in sign_outs if j.cause is not None and j.record.via == VIA_SCRIPT]

    promised = list(seen.replays)
    caught, missed = 0, []
    caught_by_variant: Counter[str] = Counter()
    for replay in promised:
        ended_as = consistency.ended_as.get(replay.session_id)
        if replay.cleared and not replay.new_cookies and not replay.signed_in and ended_as == REASON_REUSE:
            caught += 1
            caught_by_variant[replay.variant] += 1
        else:
            missed.append(
                f"browser {replay.victim}, session {replay.session_id}: copy at counter {replay.copied_counter}, "
                f"victim at {replay.victim_counter} ({replay.variant}); answered {replay.status} "
                f"{replay.location or ''}, cleared={replay.cleared}, new cookies={replay.new_cookies}, "
                f"signed in={replay.signed_in}; the session ended as {ended_as!r}"
            )
    replay_answers = Counter(
        f"{r.status} to {(r.location or '').split('?')[0] or 'the page'}"
        + (", cookies cleared" if r.cleared else "")
        + (", new cookies" if r.new_cookies else "")
        for r in promised
    )
    by_variant = Counter(r.variant for r in promised)

    revocation_problems = []
    for revocation in seen.revocations:
        ended_as = consistency.ended_as.get(revocation.session_id)
        if not revocation.done:
            revocation_problems.append(f"revoking {revocation.session_id} answered {revocation.status}")
        elif ended_as != REASON_REVOKED_BY_USER or not revocation.gone_from_list:
            revocation_problems.append(
                f"revoked {revocation.session_id}: ended as {ended_as!r}, gone from the list: "
                f"{revocation.gone_from_list}"
            )

    failed_sign_ins = tuple(
        f"browser {s.browser} {s.form}: {s.detail} after {s.attempts} attempts" for s in seen.sign_ins if not s.ok
    )
    used_after_end = find_used_after_end(seen)
    alerts_seen = sum(1 for check in seen.alert_checks if check.alert_seen)
    applied = sum(1 for w in windows if w.applied)

    navigation = Latency.of(r.ms for r in browser_requests if r.kind == PAGE and r.status == 200)
    page_load = Latency.of(p.total_ms for p in seen.page_loads if p.path != "refocus" and p.outcome == "ok")
    refocus = Latency.of(p.total_ms for p in seen.page_loads if p.path == "refocus" and p.outcome == "ok")
    sub_request = Latency.of(r.ms for r in browser_requests if r.kind == FETCH and r.status == 200)
    rotating = Latency.of(r.ms for r in browser_requests if r.rotated and r.kind in (PAGE, FETCH, REFRESH))
    rotations_per_second = consistency.rotations / load_seconds if load_seconds else 0.0
    # Answers the killed worker took with it: the first tries whose connection failed
    # around the kill (each was sent again).
    lost_in_kill = sum(
        1
        for r in seen.requests
        if r.status == 0 and not r.retry and any(_overlaps(r, w, after=KILL_AFTERMATH) for w in kills)
    )
    outage_5xx = sum(1 for r in seen.requests if r.status >= 500 and any(_overlaps(r, w) for w in restarts))
    telemetric, telemetry_targets = judge_telemetry(
        telemetry, seen, consistency, replays_caught=caught, lost_in_kill=lost_in_kill, outage_5xx=outage_5xx
    )

    targets = (
        Target("false sign-outs", str(len(false_sign_outs)), "= 0", not false_sign_outs),
        Target(
            "5xx other than the database restart's 503s and the sign-in form's load shedding",
            str(len(unexplained_5xx)),
            "= 0",
            not unexplained_5xx,
        ),
        Target(
            "replays caught",
            f"{caught} of {len(promised)} ("
            + ", ".join(f"{case} {caught_by_variant[case]} of {by_variant[case]}" for case in REPLAY_CASES)
            + ")",
            "all, at least 1 of each case",
            caught == len(promised) and all(by_variant[case] for case in REPLAY_CASES),
        ),
        Target("signed-in answers for a session after it ended", str(len(used_after_end)), "= 0", not used_after_end),
        Target(
            "expected sign-outs told the right reason",
            f"{len(sign_outs) - len(false_sign_outs) - len(untold)} of {len(sign_outs) - len(false_sign_outs)} "
            f"(found by a page script: the notice {sum(j.notice_told for j in by_script)} of {len(by_script)}, "
            f"the sign-in page after it {sum(j.landing_told for j in by_script)} of {len(by_script)})",
            "all",
            not untold,
        ),
        Target(
            "devices signed out from another device",
            f"{len(seen.revocations) - len(revocation_problems)} of {len(seen.revocations)} took effect",
            "all, at least 1",
            bool(seen.revocations) and not revocation_problems,
        ),
        Target(
            "reuse alert on the devices page after signing in again",
            f"{alerts_seen} of {len(seen.alert_checks)}",
            "all",
            alerts_seen == len(seen.alert_checks),
        ),
        Target("sign-ins that never got in", str(len(failed_sign_ins)), "= 0", not failed_sign_ins),
        Target(
            "failed connections (after a browser's retry) away from the killed worker",
            str(len(unexplained_failures)),
            "= 0",
            not unexplained_failures,
        ),
        Target(
            "database consistency violations",
            str(len(consistency.violations)),
            "= 0",
            not consistency.violations,
        ),
        Target("faults applied", f"{applied} of {len(windows)}", "3 of 3", applied == 3 and len(windows) == 3),
        *telemetry_targets,
    )
    return Verdict(
        seconds=load_seconds,
        requests=len(seen.requests),
        page_loads=len(seen.page_loads),
        sign_outs=sign_outs,
        unexplained_5xx=tuple(unexplained_5xx),
        outage_503s=outage_503s,
        busy_503s=busy_503s,
        retried_connections=retried,
        failed_connections_in_kill=failed_in_kill,
        unexplained_connection_failures=tuple(unexplained_failures),
        replays=len(promised),
        replays_caught=caught,
        replays_by_variant=dict(by_variant),
        caught_by_variant=dict(caught_by_variant),
        missed_replays=tuple(missed),
        replay_answers=dict(replay_answers),
        used_after_end=used_after_end,
        revocations=len(seen.revocations),
        revocation_problems=tuple(revocation_problems),
        alert_checks=len(seen.alert_checks),
        alerts_seen=alerts_seen,
        sign_ins=len(seen.sign_ins),
        failed_sign_ins=failed_sign_ins,
        sign_in_retries_busy=sum(s.busy for s in seen.sign_ins),
        sign_in_retries_unavailable=sum(s.unavailable for s in seen.sign_ins),
        rotations=consistency.rotations,
        rotations_per_second=rotations_per_second,
        client_rotations=sum(1 for r in browser_requests if r.rotated and r.kind in (PAGE, FETCH, REFRESH)),
        grace_answers=sum(1 for r in browser_requests if r.grace),
        navigation=navigation,
        page_load=page_load,
        refocus=refocus,
        sub_request=sub_request,
        rotating_request=rotating,
        outcomes=dict(Counter(p.outcome for p in seen.page_loads)),
        telemetric=telemetric,
        telemetry=telemetry,
        targets=targets,
    )
