# `make run` serves the app on the embedded SQLite default; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?= 1
PYTEST_ARGS ?=
# HTTPS when both are set (device-bound sessions need it): gunicorn serves TLS itself.
TLS_CERT_FILE ?=
TLS_KEY_FILE ?=
TLS_ARGS := $(if $(and $(TLS_CERT_FILE),$(TLS_KEY_FILE)),--certfile $(TLS_CERT_FILE) --keyfile $(TLS_KEY_FILE))
# With LOG_FORMAT=json the app writes a JSON line per request itself: no second, plain one.
ACCESS_LOG := $(if $(filter json,$(LOG_FORMAT)),,--access-logfile -)

.PHONY: install install-test install-bench run test test-fast test-browser lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $(VENV)/.installed $@

$(VENV)/.installed-bench: requirements.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-bench: $(VENV)/.installed-bench

# gunicorn also reads ./gunicorn.conf.py: threaded workers, so a client that stalls
# mid-request holds one thread, not a whole worker (tests/test_serving.py starts this line).
run: install
	$(BIN)/flask db upgrade
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) $(ACCESS_LOG) $(TLS_ARGS) wsgi:app

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# The edit-test loop: everything but the browser and PostgreSQL variants (about a minute).
test-fast: install-test
	$(BIN)/python -m pytest -m "not browser and not postgres" $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# What CI checks before the tests: lint and formatting (ruff, configured in pyproject.toml).
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Only the end-to-end tests in Chromium (/usr/bin/chromium; skipped, saying so, without it).
test-browser: install-test
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

# The cost of revocation and rotation, and our pages against the peers (bench/peer_*.py), measured
# (the bench/ package; needs wrk, installed from Debian's packages when run as root). Never part of
# `make test`.
bench: install-bench
	$(BIN)/python -m bench

# Minutes of browser-like load on the production shape, with faults (the soak/ package: private
# PostgreSQL and Redis, gunicorn -w 4, Locust). Never part of `make test`.
soak: install-bench
	$(BIN)/python -m soak

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
