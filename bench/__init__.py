"""`make bench` (`python -m bench`): what immediate revocation and rotation cost, measured side by side.

Serves the app with gunicorn on 127.0.0.1 (free ports) on fresh SQLite databases in a
temporary directory, with the production settings (`APP_ENV=production`, a random
`SECRET_KEY`, `BCRYPT_ROUNDS` as configured, 12 by default), and measures the ratios
below.
Every ratio is measured in rounds that alternate A B A B on the same machine in the same
minute, so a noisy neighbour slows both sides alike; we print the median of the
per-round ratios with their min and max.

1. `/account` with a valid access cookie over `/` signed out (throughput, wrk).
2. `/account` with an expired access cookie and a fresh refresh cookie (the request
   rotates) over `/account` with a valid access cookie (cost per request, wrk).
3. Median latency of `POST /auth/refresh` (one rotation, no page) with 1,000,000 more
   sessions in the table over the same with 1,000 (wrk, one connection); then the time
   `flask prune` takes to delete those 1,000,000 expired rows and the longest sign-in
   meanwhile.
4. Median `POST /auth/login` latency (wrk, one connection) over one bcrypt check at the
   configured cost, timed in this process.
5. A device-bound (DBSC) refresh over a plain rotation (bench/dbsc.py).
6. Our signed-in `/account` against the same page (same template, same context, five
   activity rows) served by gunicorn alike from: a bare Flask app with no authentication
   (the floor, bench/peer_floor.py), Flask-JWT-Extended (bench/peer_jwt_extended.py), and
   Flask-Login over Flask-Session with SQLAlchemy and, when Redis answers on
   127.0.0.1:6379, with Redis (bench/peer_flask_login.py); each built as its docs show,
   its browsers signed in through its own login view (bench/peers.py, with the page
   they share in bench/account_page.py). Throughput, ours over each, and worker CPU per
   request.

Fresh refresh tokens without a browser: a refresh token is a pure function of (session,
counter) and the secret, so the bench creates sessions directly in the database (with
the engine's own `build_session`, counter 0), and writes for wrk one cookie line per
request in the order session 1..N at counter c, then session 1..N at counter c+1, and so
on. Each request presents the session's current counter, a session is never in flight
twice (N is far above the number of connections), and before every round the counters
are read back from the database so a round cut short by wrk's timer loses nothing. wrk's
Lua script never wraps around (bench/lines.lua), and the round fails loudly if it ran out
of lines.

The modules, in the order a run uses them: `settings` (the environment, read once),
`server` (the app's environment, migrations, gunicorn serving ours or a peer),
`population` (users, sessions and the cookie lines their browsers send), `wrk` (one run of
wrk), `measurements` (the four ratios and `flask prune`, each a frozen dataclass), `dbsc`
(5), `peers` (6, over `account_page` and the `peer_*` apps) and `report` (the markdown
table, bench/results.md and the README's block).

Settings: BENCH_ROUNDS (5), BENCH_SECONDS (3), BENCH_WORKERS (gunicorn workers, 2),
BENCH_CONNECTIONS (4), BENCH_SCALE_ROWS (1000000), BENCH_WRITE (1: write
bench/results.md and the README table), BENCH_ONLY (pages, sign_in, scale, dbsc or peers:
run one part and print its results as JSON; implies BENCH_WRITE=0).
"""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)
