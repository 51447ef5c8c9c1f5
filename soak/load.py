"""Locust, headless, in a process group of its own, driving the browsers of soak/locustfile.py."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .app_server import ROOT
from .observations import LoadPlan
from .processes import start_group, stop_group

LOCUSTFILE = ROOT / "soak" / "locustfile.py"
# Beyond the plan's deadline: the last actions finish (a sign-in waiting out an outage).
WIND_DOWN_SECONDS = 45


@dataclass(frozen=True)
class EndpointStats:
    """One row of Locust's own statistics."""

    method: str
    name: str
    requests: int
    failures: int
    median_ms: float
    p99_ms: float


def start_locust(plan: LoadPlan, plan_file: Path, *, spawn_rate: float, workdir: Path) -> subprocess.Popen[bytes]:
    seconds = max(1, int(plan.deadline - time.time()) + WIND_DOWN_SECONDS)
    environ = {
        **os.environ,
        "SOAK_LOAD_PLAN": str(plan_file),
        # The locustfile imports the soak package from the project root.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    return start_group(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            LOCUSTFILE,
            "--headless",
            "--users",
            str(plan.users),
            "--spawn-rate",
            str(spawn_rate),
            "--run-time",
            f"{seconds}s",
            "--host",
            plan.base_url,
            "--csv",
            workdir / "locust",
            "--only-summary",
            "--stop-timeout",
            "10",
            # The soak judges the run itself (soak/verdict.py).
            "--exit-code-on-error",
            "0",
        ],
        cwd=ROOT,
        env=environ,
        log=workdir / "locust.log",
    )


def wait_for_locust(process: subprocess.Popen[bytes], *, timeout: float) -> int:
    """Its exit status; stopped (and a RuntimeError raised) if it outlives `timeout`."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        raise RuntimeError("Locust did not finish in time") from None


def read_locust_stats(workdir: Path) -> list[EndpointStats]:
    path = workdir / "locust_stats.csv"
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] == "Aggregated":
                continue
            rows.append(
                EndpointStats(
                    method=row["Type"],
                    name=row["Name"],
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    median_ms=float(row["Median Response Time"] or 0),
                    p99_ms=float(row["99%"] if row["99%"] not in ("", "N/A") else 0),
                )
            )
    return rows
