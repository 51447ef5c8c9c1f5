"""gunicorn's settings for this app. gunicorn reads `./gunicorn.conf.py` by itself when it
starts in the project root, as `make run` and the README's commands do; options on the
command line (`--workers`, `--bind`) win over these.
"""

import os
import shutil
import sys
import tempfile

from gunicorn.glogging import Logger

# Nothing here imports the app (nor prometheus_client, which the app imports): whether
# the workers count into shared files is decided in `on_starting`, and prometheus_client
# decides it once, when it is first imported (in each worker, after that).

# Threads, not gunicorn's default sync workers. A sync worker serves one connection from
# its first byte to its last: a client that sends half a request and stalls holds the
# whole process until `timeout` kills it, and as many such clients as there are workers
# leave every other visitor (and /healthz) unanswered. A gthread worker reads each
# connection in one of its threads: a stalled client holds one thread, the others go on
# serving, and idle keep-alive connections wait in the worker's poller, not in a thread.
# In production a buffering proxy in front (nginx) sends gunicorn only whole requests.
worker_class = "gthread"
threads = 8

# For threaded workers a heartbeat, not a request deadline: the master restarts a worker
# whose main loop has not checked in for this long.
timeout = 30

# Seconds an idle keep-alive connection stays open. It costs no thread, only a socket.
keepalive = 5


class AccessLogWithoutLinkTokens(Logger):
    """gunicorn's logger, with the tokens of password-reset and "Not you?" links cut out
    of the access log's request line, path and Referer: a log must not hold a working
    password-reset link."""

    def atoms(self, resp, req, environ, request_time):
        from webapp.redaction import redact_link_tokens  # in the worker, which has the app

        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_link_tokens(value) if isinstance(value, str) else value for key, value in atoms.items()}


logger_class = AccessLogWithoutLinkTokens


def on_starting(server):
    """Set up the metrics' shared directory, and refuse several worker processes when the
    sign-in limits count in memory."""
    share_metrics_between_workers(server)
    refuse_per_process_limits(server)


# Marks the directory this server made, so that it (and only it) is removed at exit, also
# after a reload (SIGHUP) has read this file again.
_OWN_METRICS_DIRECTORY = "WEBAPP_METRICS_DIRECTORY_MADE_BY_GUNICORN"


def share_metrics_between_workers(server):
    """With METRICS_TOKEN set (in the environment, or with gunicorn's -e), every worker
    counts into files in a directory of this server's own, and a scrape answered by any
    worker adds them all up (webapp/metrics.py). Made fresh at each start, removed at exit:
    counts of a previous run must not be read as this one's."""
    if not (os.environ.get("METRICS_TOKEN") or "").strip() or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    if "prometheus_client" in sys.modules:
        # Imported already (preload_app, say): it decided to count per process.
        server.log.error(
            "METRICS_TOKEN is set but prometheus_client was imported before the workers could share their "
            "counts: set PROMETHEUS_MULTIPROC_DIR to an empty directory before starting gunicorn."
        )
        sys.exit(1)
    directory = tempfile.mkdtemp(prefix="webapp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ[_OWN_METRICS_DIRECTORY] = directory


def refuse_per_process_limits(server):
    """Refuse several worker processes when the sign-in limits count in memory.

    `memory://` (the default RATELIMIT_STORAGE_URI) counts in each process on its own, so
    with N workers every limit would be N times looser, and differently on every run.
    Set RATELIMIT_STORAGE_URI=redis://... to share the counts, or ALLOW_PER_PROCESS_LIMITS=on
    to accept the looser limits knowingly (a benchmark, a test that lifts the limits).
    """
    import os
    import sys

    storage = (os.environ.get("RATELIMIT_STORAGE_URI") or "memory://").strip()
    allowed = (os.environ.get("ALLOW_PER_PROCESS_LIMITS") or "off").strip().lower() in ("1", "true", "on", "yes")
    if server.cfg.workers > 1 and storage.startswith("memory://") and not allowed:
        server.log.error(
            "%d workers with RATELIMIT_STORAGE_URI=%s: each process would keep its own sign-in counts, so every "
            "limit would be %d times looser. Set RATELIMIT_STORAGE_URI=redis://HOST:6379/0 to share them, run one "
            "worker (its threads share them), or set ALLOW_PER_PROCESS_LIMITS=on to accept per-process limits.",
            server.cfg.workers,
            storage,
            server.cfg.workers,
        )
        sys.exit(1)


def child_exit(server, worker):
    """A worker that stopped (or was killed) leaves its counts; its live-only figures go."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    directory = os.environ.get(_OWN_METRICS_DIRECTORY)
    if directory and directory == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(directory, ignore_errors=True)
