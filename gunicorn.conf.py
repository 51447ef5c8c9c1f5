"""gunicorn's settings for this app. gunicorn reads `./gunicorn.conf.py` by itself when it
starts in the project root, as `make run` and the README's commands do; options on the
command line (`--workers`, `--bind`) win over these.
"""

import os
import shutil
import tempfile

# Before anything imports prometheus_client (webapp does): with METRICS_TOKEN set, every
# worker counts into files here, and a scrape answered by any worker adds them all up
# (webapp/metrics.py). A directory of this server's own, emptied when it stops: counts of
# a previous run must not be read as this one's.
_metrics_directory = None
if (os.environ.get("METRICS_TOKEN") or "").strip() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_directory = tempfile.mkdtemp(prefix="webapp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_directory

from gunicorn.glogging import Logger  # noqa: E402

from webapp.redaction import redact_link_tokens  # noqa: E402

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
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_link_tokens(value) if isinstance(value, str) else value for key, value in atoms.items()}


logger_class = AccessLogWithoutLinkTokens


def on_starting(server):
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
    if _metrics_directory is not None:
        shutil.rmtree(_metrics_directory, ignore_errors=True)
