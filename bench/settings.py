"""What one run of the bench does: read once from the environment in `__main__`, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The parts BENCH_ONLY may name: the pages (1, 2), sign-in (4), scale with prune (3),
# device-bound refresh (5) and our /account against the peers (6).
PARTS = ("pages", "sign_in", "scale", "dbsc", "peers")
_OFF = ("0", "false", "off", "no")


@dataclass(frozen=True)
class Settings:
    """The bench's settings (see the package docstring for the variables)."""

    wrk: str  # the wrk executable
    rounds: int
    seconds: int  # per side and round
    workers: int  # gunicorn workers for the pages and sign-in server
    connections: int  # wrk connections for throughput; latencies use one
    scale_rows: int  # expired sessions beside the live ones in the large table
    bcrypt_rounds: int
    only: str  # "" for a full run, or one of PARTS
    write: bool  # write bench/results.md and the README's block
    # Live sessions in each of the two scale tables.
    live_rows: int = 1000

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, wrk: str) -> Settings:
        """Read the BENCH_* variables and BCRYPT_ROUNDS. Raises SystemExit for an unknown BENCH_ONLY."""
        only = environ.get("BENCH_ONLY", "")
        if only not in ("", *PARTS):
            raise SystemExit(f"BENCH_ONLY must be one of {', '.join(PARTS)} (got {only!r})")
        return cls(
            wrk=wrk,
            rounds=int(environ.get("BENCH_ROUNDS", "5")),
            seconds=int(environ.get("BENCH_SECONDS", "3")),
            workers=int(environ.get("BENCH_WORKERS", "2")),
            connections=int(environ.get("BENCH_CONNECTIONS", "4")),
            scale_rows=int(environ.get("BENCH_SCALE_ROWS", "1000000")),
            bcrypt_rounds=int(environ.get("BCRYPT_ROUNDS", "12")),
            only=only,
            # A partial run must not overwrite the published table.
            write=not only and environ.get("BENCH_WRITE", "1") not in _OFF,
        )

    @property
    def scale_rounds(self) -> int:
        """Latency medians over one connection are noisier than throughput, and these
        rounds are cheap: twice as many."""
        return 2 * self.rounds + 1

    def runs(self, part: str) -> bool:
        """Whether this run measures `part` (one of PARTS)."""
        return self.only in ("", part)
