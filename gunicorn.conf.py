"""gunicorn's settings for this app. gunicorn reads `./gunicorn.conf.py` by itself when it
starts in the project root, as `make run` and the README's commands do; options on the
command line (`--workers`, `--bind`) win over these.
"""

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
