"""The markdown table of a run, and where it is published: bench/results.md and the README's block."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
from dataclasses import dataclass

from .measurements import BenchResults, RatioSummary
from .peers import LABELS, PeersResult, Side
from .server import ROOT
from .settings import Settings

RESULTS = ROOT / "bench" / "results.md"
README = ROOT / "README.md"
# The README's copy of the table sits between these two lines.
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Target:
    """What a ratio's median should be: at least (`>=`) or at most (`<=`) `bound`."""

    comparison: str
    bound: float

    @property
    def verdict_text(self) -> str:
        """The target alone, for a row that has no value to judge."""
        return f"{self.comparison} {self.bound:.2f}"

    def verdict(self, value: float) -> str:
        met = value >= self.bound if self.comparison == ">=" else value <= self.bound
        return f"{self.verdict_text}: {'met' if met else 'MISSED'}"


SIGNED_IN_TARGET = Target(">=", 0.90)
ROTATION_TARGET = Target("<=", 1.5)
SCALE_TARGET = Target("<=", 1.15)
SIGN_IN_TARGET = Target("<=", 1.10)
DBSC_TARGET = Target("<=", 2.0)
# Our signed-in /account against the same page elsewhere (bench/peers.py): at least this
# share of a page without authentication, and this many times the peers' throughput.
PEER_TARGETS = {
    Side.FLOOR: Target(">=", 0.80),
    Side.JWT_EXTENDED: Target(">=", 1.5),
    Side.LOGIN_SQLALCHEMY: Target(">=", 3.0),
    Side.LOGIN_REDIS: Target(">=", 3.0),
}


def _summary(ratio: RatioSummary) -> str:
    return f"**{ratio.median:.2f}** ({ratio.low:.2f} to {ratio.high:.2f})"


def _peer_rows(peers: PeersResult) -> list[str]:
    """One row per peer: ours over it, with its target; a peer not measured says why."""
    ours_rps = statistics.median(peers.ours_rps)
    rows = []
    for side, target in PEER_TARGETS.items():
        label = LABELS[side]
        comparison = peers.comparison(side)
        if comparison is None:
            reason = next((why.removeprefix(f"{label}: ") for why in peers.skipped if why.startswith(label)), "")
            rows.append(
                f"| signed-in `/account` rps, ours over {label} | not measured: {reason or 'no reason recorded'} "
                f"| {target.verdict_text} | | |"
            )
            continue
        rows.append(
            f"| signed-in `/account` rps, ours over {label} | {_summary(comparison.over_peer)} "
            f"| {target.verdict(comparison.over_peer.median)} | {_summary(comparison.cpu_over_peer)} "
            f"| {ours_rps:.0f} rps / {statistics.median(comparison.peer_rps):.0f} rps |"
        )
    return rows


def _peer_sizes(peers: PeersResult) -> str:
    sizes = ", ".join(f"{comparison.label} {comparison.peer_page_bytes:,}" for comparison in peers.comparisons)
    cookies = [comparison.label for comparison in peers.comparisons if comparison.sets_cookie_each_request]
    return (
        f"Peers (bench/peer_*.py; the same template, five activity rows, served alike): /account is "
        f"{peers.ours_page_bytes:,} bytes for ours, {sizes}. In the steady state only "
        f"{' and '.join(cookies) or 'no peer'} set a cookie (Flask-Session's, on every request by design); "
        "worker CPU leaves out Redis's own."
    )


def render_report(results: BenchResults, settings: Settings) -> str:
    """The table, the prune paragraph and the run's particulars, in markdown. Raises
    ValueError for a partial run (BENCH_ONLY), which has no table."""
    pages, sign_in, scale, prune, dbsc = results.pages, results.sign_in, results.scale, results.prune, results.dbsc
    peers = results.peers
    if pages is None or sign_in is None or scale is None or prune is None or dbsc is None or peers is None:
        raise ValueError("only a full run has a table")
    if not isinstance(peers, PeersResult):
        raise TypeError(f"results.peers is a {type(peers).__name__}")
    anonymous_rps = statistics.median(pages.rps.anonymous)
    signed_in_rps = statistics.median(pages.rps.signed_in)
    sizes = pages.sizes
    lines = [
        "| ratio | median (min to max over rounds) | target | worker CPU per request, same ratio | per side, medians |",
        "|---|---|---|---|---|",
        # /account renders the session's times and recent activity (two queries): a page
        # of its own weight, so the hook's target is on the row where only the hook differs.
        f"| signed-in `/account` rps over signed-out `/` rps (a heavier page) | {_summary(pages.signed_in)} "
        f"| (none) "
        f"| {_summary(pages.cpu_signed_in)} | {signed_in_rps:.0f} rps / {anonymous_rps:.0f} rps |",
        f"| signed-in `/` rps over signed-out `/` (one template: only the hook differs) | {_summary(pages.same_page)} "
        f"| {SIGNED_IN_TARGET.verdict(pages.same_page.median)} | {_summary(pages.cpu_same_page)} "
        f"| {statistics.median(pages.rps.signed_in_root):.0f} rps / {anonymous_rps:.0f} rps |",
        f"| rotating request cost over non-rotating (`/account`) | {_summary(pages.rotation)} "
        f"| {ROTATION_TARGET.verdict(pages.rotation.median)} | {_summary(pages.cpu_rotation)} "
        f"| {statistics.median(pages.rps.rotating):.0f} rps rotating, {signed_in_rps:.0f} rps not |",
        f"| rotation latency at {settings.scale_rows + settings.live_rows:,} sessions over {settings.live_rows:,} "
        f"| {_summary(scale.ratio)} | {SCALE_TARGET.verdict(scale.ratio.median)} | {_summary(scale.cpu_ratio)} "
        f"| p50 {statistics.median(scale.large_p50_ms):.2f} ms / {statistics.median(scale.small_p50_ms):.2f} ms |",
        f"| sign-in latency over one bcrypt check (cost {settings.bcrypt_rounds}) | {_summary(sign_in.ratio)} "
        f"| {SIGN_IN_TARGET.verdict(sign_in.ratio.median)} | {_summary(sign_in.cpu_ratio)} "
        f"| p50 {statistics.median(sign_in.sign_in_p50_ms):.1f} ms / {statistics.median(sign_in.bcrypt_ms):.1f} ms |",
        f"| device-bound refresh (challenge, then signed answer) over a plain rotation (`/auth/refresh`) "
        f"| {_summary(dbsc.refresh_over_rotation)} | {DBSC_TARGET.verdict(dbsc.refresh_over_rotation.median)} "
        f"| {_summary(dbsc.cpu_refresh_over_rotation)} "
        f"| {statistics.median(dbsc.challenge_rps):.0f} rps challenges, {statistics.median(dbsc.signed_rps):.0f} rps "
        f"signed refreshes / {statistics.median(dbsc.plain_rps):.0f} rps plain |",
        *_peer_rows(peers),
        "",
        f"`flask prune` deleted {prune.deleted:,} expired sessions (of {prune.expired_before:,} left after the "
        f"workers' own opportunistic batches) in **{prune.seconds:.1f} s** "
        f"(output: `{prune.output}`); meanwhile {prune.sign_ins} sign-ins, the longest took "
        f"**{prune.max_sign_in_ms:.0f} ms** (median {prune.median_sign_in_ms:.0f} ms, {prune.failed_sign_ins} failed; "
        f"with the table idle: median {prune.baseline_median_ms:.0f} ms, longest {prune.baseline_max_ms:.0f} ms).",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}. "
        f"Run: {results.started_at:%Y-%m-%d %H:%M UTC}, {settings.rounds} rounds ({settings.scale_rounds} for the "
        f"scale row) of {settings.seconds:g} s per side (at least 3 s for sign-in), alternating.",
        f"Settings: gunicorn {settings.workers} gthread workers (gunicorn.conf.py), "
        f"wrk 1 thread {settings.connections} connections (1 for latencies), APP_ENV=production, "
        f"BCRYPT_ROUNDS={settings.bcrypt_rounds}, SQLite in WAL mode; "
        f"{scale.bulk_insert_seconds:.1f} s to bulk-insert {settings.scale_rows:,} sessions.",
        f"Page sizes: / (signed out) {sizes.signed_out_root:,} bytes, /account (signed in) "
        f"{sizes.signed_in_account:,} bytes, /account (rotating) {sizes.rotating_account:,} bytes, "
        f"/ (signed in) {sizes.signed_in_root:,} bytes.",
        _peer_sizes(peers),
    ]
    return "\n".join(lines) + "\n"


def write_results(table: str) -> None:
    """Write `table` to bench/results.md, and between the README's bench markers (if it has them)."""
    RESULTS.write_text(
        "# Benchmark results\n\nWritten by `make bench` (`python -m bench`; bench/__init__.py explains the "
        "method). Latest run:\n\n" + table
    )
    readme = README.read_text()
    if README_START in readme and README_END in readme:
        head, rest = readme.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        README.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")
