"""The markdown summary of a soak: soak/results.md, and what `make soak` prints."""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

from .app_server import REFRESH_REUSE_GRACE, ROOT
from .consistency import Consistency
from .faults import FaultWindow
from .load import EndpointStats
from .settings import Settings
from .verdict import Latency, Verdict

RESULTS = ROOT / "soak" / "results.md"
# Lists in the report show this many entries, then say how many more there were.
SHOWN = 10


def _latency_row(name: str, latency: Latency) -> str:
    return f"| {name} | {latency.count:,} | {latency.p50_ms:.0f} | {latency.p99_ms:.0f} |"


def _listing(title: str, entries: Sequence[str]) -> list[str]:
    if not entries:
        return []
    lines = ["", f"**{title}** ({len(entries)}):", ""]
    lines += [f"- {entry}" for entry in entries[:SHOWN]]
    if len(entries) > SHOWN:
        lines.append(f"- ... and {len(entries) - SHOWN} more")
    return lines


def render_report(
    verdict: Verdict,
    consistency: Consistency,
    windows: Sequence[FaultWindow],
    endpoints: Sequence[EndpointStats],
    settings: Settings,
    *,
    load_started_at: float,
    server_log_excerpt: str,
) -> str:
    started_at = datetime.fromtimestamp(load_started_at, timezone.utc)
    outcome = "PASSED: every target met" if verdict.passed else "FAILED: a target was missed"
    lines = [
        "# Soak results",
        "",
        f"**{outcome}.** {started_at:%Y-%m-%d %H:%M} UTC, {verdict.seconds:.0f} s of load: "
        f"{settings.users} browsers (started {settings.spawn_rate:g}/s), gunicorn -w {settings.workers} "
        f"over HTTPS, private PostgreSQL and Redis, ACCESS_TOKEN_TTL={settings.access_token_ttl} s, "
        f"REFRESH_REUSE_GRACE={REFRESH_REUSE_GRACE} s, pauses of 1 to {settings.think_seconds:g} s; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| target | value | goal | |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {target.name} | {target.value} | {target.goal} | {'met' if target.met else '**MISSED**'} |"
        for target in verdict.targets
    ]
    lines += [
        "",
        "## Load",
        "",
        f"{verdict.requests:,} requests, {verdict.page_loads:,} page loads and tab refocuses "
        f"({', '.join(f'{name} {count}' for name, count in sorted(verdict.outcomes.items()))}), "
        f"{verdict.sign_ins} sign-ins. **{verdict.rotations:,} rotations "
        f"({verdict.rotations_per_second:.1f}/s)** in the database; the browsers received "
        f"{verdict.client_rotations:,} new refresh cookies and {verdict.grace_answers:,} grace answers "
        "(a new access cookie, the refresh cookie left alone: parallel requests on one rotation).",
        "",
        "| latency | count | p50 ms | p99 ms |",
        "|---|---|---|---|",
        _latency_row("navigation (the page's own request)", verdict.navigation),
        _latency_row("page load (page, then 4 to 8 script requests at once)", verdict.page_load),
        _latency_row("tab refocus (4 to 8 script requests at once, no page)", verdict.refocus),
        _latency_row("script request (`/api/...`)", verdict.sub_request),
        _latency_row("request that rotated the refresh token", verdict.rotating_request),
        "",
        "## Faults",
        "",
        "| fault | at (s into the load) | what happened |",
        "|---|---|---|",
    ]
    lines += [
        f"| {w.kind} | {w.started_at - load_started_at:.0f} | {w.detail} |"
        if w.applied
        else f"| {w.kind} | | **not applied**: {w.detail} |"
        for w in windows
    ]
    lines += [
        "",
        f'503s during the database restart: {verdict.outage_503s}. Sign-in load shedding (503 "Signing in is busy", '
        f"waited out as told): {verdict.busy_503s}. Sign-in attempts retried after an outage answer: "
        f"{verdict.sign_in_retries_unavailable}. Connections that failed and were retried once, as a browser "
        f"does: {verdict.retried_connections}; failed twice around the killed worker: "
        f"{verdict.failed_connections_in_kill}.",
        "",
        "## Sign-outs, revocations, replays",
        "",
    ]
    causes = Counter(j.cause or "none: FALSE" for j in verdict.sign_outs)
    vias = Counter(f"{j.cause or 'false'} via {j.record.via}" for j in verdict.sign_outs)
    lines += [
        f"Sign-outs a browser met: {len(verdict.sign_outs)} "
        f"({', '.join(f'{cause}: {count}' for cause, count in sorted(causes.items())) or 'none'}); "
        f"how they learnt it: {', '.join(f'{k}: {v}' for k, v in sorted(vias.items())) or '-'}. "
        f"Devices signed out from another device: {verdict.revocations}. "
        f"Replays: {verdict.replays} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(verdict.replays_by_variant.items())) or '-'}), "
        f"caught {verdict.replays_caught}; the thief was answered "
        f"{', '.join(f'{k} ({v})' for k, v in sorted(verdict.replay_answers.items())) or '-'}. "
        f"Reuse alert seen by the victim after signing in again: {verdict.alerts_seen} of {verdict.alert_checks}.",
        "",
        'The replay cases (soak/thief.py): "older", two or more rotations behind the victim; "previous", one '
        'behind, after the grace window, the rotation proven by its own access token; "undelivered", one behind, '
        "after the grace window, while the victim kept a grace answer's access cookie beside the new refresh "
        "cookie and was signed in with that pair (the refresh cookie proves the rotation arrived).",
    ]
    script_learnt = [j for j in verdict.sign_outs if j.cause is not None and j.record.via == "script"]
    if script_learnt:
        notices = Counter(j.record.message or "(no notice)" for j in script_learnt)
        landings = Counter(j.record.landing_message or "(nothing)" for j in script_learnt)
        lines += [
            "",
            f"{len(script_learnt)} expected sign-out(s) reached the browser through a page script's request. "
            "The notice of session-fetch.js said: "
            + "; ".join(f"“{k}” ({v})" for k, v in sorted(notices.items()))
            + '. The sign-in page its "Sign in again" link opened said: '
            + "; ".join(f"“{k}” ({v})" for k, v in sorted(landings.items()))
            + ".",
        ]
    untold = [j for j in verdict.sign_outs if j.cause is not None and not j.told_why]
    lines += _listing(
        "Expected sign-outs not told the right reason",
        [
            f"browser {j.record.browser} ({j.cause}, via {j.record.via}, {j.record.detail}): "
            f"said “{j.record.message or 'nothing'}”"
            + (f", then the sign-in page “{j.record.landing_message or 'nothing'}”" if j.record.via == "script" else "")
            for j in untold
        ],
    )
    lines += _telemetry_section(verdict)
    lines += [
        "",
        "## Database",
        "",
        f"{consistency.sessions} sessions ({consistency.active} active at the end; ended as: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(consistency.reasons.items()) if k != 'active') or 'none'}). "
        f"Sessions whose last use is dated after their end within the tolerance (a request's clock is read "
        f"at its start, its transaction commits later): {consistency.skewed}, at most "
        f"{consistency.largest_skew_ms:.0f} ms.",
    ]
    lines += _listing(
        "False sign-outs",
        [
            f"browser {j.record.browser} ({j.record.via}, {j.record.detail}) at "
            f"{datetime.fromtimestamp(j.record.received_at, timezone.utc):%H:%M:%S.%f}"[:-3]
            + f", session {j.record.session_id}: {j.record.message or 'no reason given'}"
            for j in verdict.false_sign_outs
        ],
    )
    lines += _listing(
        "Unexplained 5xx",
        [
            f"{r.method} {r.path} → {r.status} at {datetime.fromtimestamp(r.sent_at, timezone.utc):%H:%M:%S}"
            for r in verdict.unexplained_5xx
        ],
    )
    lines += _listing(
        "Unexplained failed connections",
        [f"{r.method} {r.path}: {r.note}" for r in verdict.unexplained_connection_failures],
    )
    lines += _listing("Replays not caught", list(verdict.missed_replays))
    lines += _listing("Signed-in answers after the session ended", list(verdict.used_after_end))
    lines += _listing("Revocations that did not take effect", list(verdict.revocation_problems))
    lines += _listing("Sign-ins that never got in", list(verdict.failed_sign_ins))
    lines += _listing("Database consistency violations", list(consistency.violations))
    if endpoints:
        lines += ["", "## Per endpoint (Locust)", "", "| request | count | failures | p50 ms | p99 ms |"]
        lines.append("|---|---|---|---|---|")
        lines += [
            f"| {e.method} {e.name} | {e.requests:,} | {e.failures:,} | {e.median_ms:.0f} | {e.p99_ms:.0f} |"
            for e in sorted(endpoints, key=lambda e: -e.requests)
        ]
        lines += ["", "Locust counts every 4xx and 5xx as a failure: 401s and 503s are judged above, not here."]
    if server_log_excerpt:
        lines += ["", "## Server log (errors)", "", "```", server_log_excerpt, "```"]
    return "\n".join(lines) + "\n"


def _plural(noun: str, count: int) -> str:
    if count == 1:
        return noun
    return noun + ("es" if noun.endswith("ss") else "s")


def _telemetry_section(verdict: Verdict) -> list[str]:
    t, log = verdict.telemetric, verdict.telemetry.log
    lines = [
        "",
        "## Metrics and logs",
        "",
        "The app ran with `METRICS_TOKEN` and `LOG_FORMAT=json`. ",
    ]
    if t.scrape_error:
        lines[-1] += f"**The scrape of /metrics failed**: {t.scrape_error}."
    else:
        statuses = ", ".join(f"{k}: {v:,.0f}" for k, v in sorted(t.responses_by_status.items()))
        lines[-1] += (
            f"One scrape of `/metrics` after the load (whichever worker answered, summed over every worker "
            f"process that served, the killed one's included; without the token: {t.unauthorised_scrape}). "
            "Responses by "
            f"status: {statuses}."
        )
        lines += [
            "",
            "| | the app's metrics | the soak's count | |",
            "|---|---|---|---|",
            f"| rotations | {t.rotations_counted:,.0f} | {t.rotations_in_database:,} counter increments in the "
            f"database (sum of `counter`) | only a rotation moves a counter (webapp/sessions.py `_advance`; a "
            f"session starts at 0); counted after its commit, so a worker killed in between or a commit the "
            f"restarting database took but never confirmed leaves the database ahead: at most {t.rotation_slack} "
            "here |",
            f"| grace answers | {t.grace_answers_counted:,.0f} | {verdict.grace_answers:,} received by the browsers "
            "(and lost rotations sent again, which set a refresh cookie) | not a target: answers overtaken by a "
            "sign-out or lost are only the app's |",
            f"| reuse detections | {t.reuse_counted:,.0f} | {t.replays_caught} replays caught; "
            f"{t.reuse_events_in_database} reuse events in the database | |",
        ]
        lines += [f"| {c.name} | {c.app} | {c.soak} | {c.note} |" for c in t.checks]
    lines += [
        "",
        f"The log: {log.lines:,} lines, {log.app_lines:,} of the app's (JSON objects: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(log.loggers.items()))
        + f"), {log.gunicorn_lines:,} of gunicorn's own ("
        + (", ".join(f"{k} {v}" for k, v in sorted(log.gunicorn_levels.items())) or "none")
        + ", with their tracebacks), told apart by gunicorn's `[time] [pid] [LEVEL]` prefix; "
        f"{log.not_json_lines} other line(s). Looked for in every line: "
        + ", ".join(f"{v:,} {_plural(k, v)}" for k, v in log.secrets_checked.items())
        + " (tokens by their random parts: a refresh token's MAC, an access token's claims and signature; "
        "addresses also by the part before the @); found: "
        + (", ".join(f"{k} in {v} line(s)" for k, v in sorted(log.leaked_kinds.items())) or "none")
        + ".",
    ]
    if log.app_warnings:
        warnings = Counter(log.app_warnings)
        lines += [
            "",
            "The app's warnings and errors (JSON lines; the first line of each message): "
            + "; ".join(f"{k} ({v})" for k, v in warnings.most_common(SHOWN))
            + ".",
        ]
    lines += _listing(
        "Log lines that are not JSON",
        [
            f"line {e.first_line}, {e.lines} line(s): `{e.text}`" + (f" ... `{e.last}`" if e.lines > 1 else "")
            for e in log.not_json
        ],
    )
    lines += _listing(
        "Log lines holding a secret", [f"line {leak.line_number} ({leak.logger}): {leak.kind}" for leak in log.leaks]
    )
    return lines


def write_results(report: str) -> None:
    RESULTS.write_text(report)
