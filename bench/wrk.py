"""wrk: finding it (installing Debian's package when root), and one run of it with bench/lines.lua."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import log

LUA = Path(__file__).resolve().parent / "lines.lua"
# The failure counters lines.lua reports; any of them makes a run's `errors`.
_ERROR_KINDS = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")


def find_wrk() -> str:
    """The path of wrk, installed with apt-get first when it is missing and this process
    runs as root. Raises SystemExit, saying how to install it, when it cannot be found."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing it with apt-get (Debian's wrk package)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
        if not found:
            # A fresh container may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
            found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "make bench needs wrk: install it with `sudo apt-get install wrk` (Debian/Ubuntu) and run again"
        )
    return found


def request_line(cookie: str, body: str | None = None, headers: Mapping[str, str] | None = None) -> str:
    """One line of the file lines.lua reads: the Cookie header, then the form body after
    a tab for a POST that sends one, then headers of this request only after another."""
    if headers:
        own = "|".join(f"{name}: {value}" for name, value in headers.items())
        return f"{cookie}\t{body or ''}\t{own}"
    return cookie if body is None else f"{cookie}\t{body}"


@dataclass(frozen=True)
class WrkResult:
    """What lines.lua reports of one wrk run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    wrk: str,
    url: str,
    lines: Sequence[str],
    workdir: Path,
    *,
    connections: int,
    seconds: int,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    cycle: bool = False,
) -> WrkResult:
    """Load `url` with one wrk thread for `seconds`, each request taking the next of
    `lines` (see `request_line`); with `cycle`, start over after the last line (for lines
    that may be replayed). Raises SystemExit when wrk reports nothing or ran out of lines."""
    lines_file = workdir / f"lines-{secrets.token_hex(4)}.txt"
    lines_file.write_text("\n".join(lines) + "\n")
    environ = dict(
        os.environ,
        BENCH_LINES=str(lines_file),
        BENCH_METHOD=method,
        BENCH_HEADERS="|".join(f"{name}: {value}" for name, value in (headers or {}).items()),
        BENCH_CYCLE="1" if cycle else "0",
    )
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "30s", "-s", str(LUA), url],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        lines_file.unlink()
    report = next((line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if report is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    data = json.loads(report.removeprefix("BENCH_JSON "))
    errors = sum(data[kind] for kind in _ERROR_KINDS)
    if errors:
        detail = {kind: data[kind] for kind in _ERROR_KINDS}
        log(f"  wrk errors at {url}: {detail}")
    if data["overflow"]:
        raise SystemExit(f"wrk ran out of fresh tokens ({data['overflow']} requests without): raise population.MAX_RPS")
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["latency_p50_us"] / 1000,
        p99_ms=data["latency_p99_us"] / 1000,
        max_ms=data["latency_max_us"] / 1000,
        errors=errors,
    )
