"""`make soak` (`python -m soak`): minutes of browser-like load on the production shape, with faults.

Everything runs on this machine, private and on free ports of 127.0.0.1, in a temporary
folder: a PostgreSQL of its own (initdb and pg_ctl; under root as the `postgres` user), a
redis-server of its own for the sign-in limits, the migrations (`flask db upgrade`), and
`gunicorn -w 4` with the project's gunicorn.conf.py and the production settings
(APP_ENV=production, a random SECRET_KEY, Secure `__Host-` cookies) over HTTPS, with a
certificate from a throwaway authority (trustme) that only the soak's browsers trust,
a random METRICS_TOKEN (GET /metrics, summed over the workers) and LOG_FORMAT=json.
Two settings differ from production: a short ACCESS_TOKEN_TTL, so that every browser
rotates many times, and the two sign-in limits that count every attempt from one address
(all the browsers come from 127.0.0.1; see app_server.py). The shared servers on 5432
and 6379 are never touched.

Locust (headless, in a process of its own) drives N browsers, each with its own cookie
jar (soak/browser.py): they register or sign in, then load pages (`/account`, `/`,
`/account/sessions`) whose scripts fire 4 to 8 requests at once through the logic of
static/js/session-fetch.js (one shared refresh on 401, one retry; when that fails, a
notice with the 401's reason and a "Sign in again" link, which the person follows), come
back to a tab
(the scripts' requests alone, often with an expired access token), and pause 1 to
SOAK_THINK_SECONDS between actions. Some sign out and in again; in every eight browsers
one person's laptop signs its phone out from the devices page now and then (the phone's
next request must land on sign-in: expected), and one browser has its refresh cookie
copied, which a thief replays once the app promises to catch it (soak/thief.py: two or
more rotations behind; one behind after the grace window, the rotation proven by its own
access token, or by the new refresh cookie beside a grace answer's access cookie).

Meanwhile (soak/faults.py): a gunicorn worker is killed with SIGKILL, PostgreSQL is
restarted (`pg_ctl restart`), Redis is stopped and started again.

At the end the soak scrapes /metrics, judges what the browsers saw (soak/verdict.py),
checks every session in the database (soak/consistency.py), holds the app's count against
both and reads every line of the app's log (soak/telemetry.py: JSON, and no token,
password or address the browsers used), writes soak/results.md, prints it, and exits 1 if
a target was missed. Everything it started is stopped on the way out, also on
Ctrl-C or a failure.

The modules, in the order a run uses them: `settings`, `processes` (process groups),
`services` (PostgreSQL, Redis, certificates), `app_server` (environment, migrations,
gunicorn), `load` (the Locust process), which runs `locustfile` with `household` (who is
who), `agent` (what one person does), `browser` (one cookie jar and its page scripts),
`thief`, `pages` (reading answers) and `observations` (the records); then `faults`,
`consistency`, `telemetry`, `verdict` and `report`.

Settings (environment variables):

- SOAK_SECONDS (180): seconds of load; the faults fall at 35 %, 55 % and 75 % of it.
  Under about 90 s there may be no replay or revocation yet, and those targets fail.
- SOAK_USERS (40): browsers. SOAK_SPAWN_RATE (1): browsers started per second.
- SOAK_WORKERS (4): gunicorn workers.
- SOAK_ACCESS_TOKEN_TTL (5): the app's ACCESS_TOKEN_TTL, in seconds.
- SOAK_THINK_SECONDS (9): the longest pause of a browser between two actions.
- SOAK_PG_RESTART_MODE (fast): `pg_ctl restart -m fast` or `immediate`.
- SOAK_REDIS_OUTAGE_SECONDS (10): how long Redis stays down.
- SOAK_KEEP (0): 1 keeps the temporary folder (server logs, the browsers' records, which
  hold the tokens and addresses they used).
- SOAK_WRITE (1): 0 prints the summary without writing soak/results.md.
"""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the summary."""
    print(message, file=sys.stderr, flush=True)
