# `make run` serves the demo at http://127.0.0.1:8000; `make test` runs every test.
# Both set everything up first: nothing is assumed installed but Python 3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` needs Stepline alone; `make test` adds the pinned test tools (Playwright, ruff, pytest).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# Most tests wait on real processes (MCP servers, a browser) more than they compute: three workers
# keep two cores busy. A module's tests stay together, so its shared servers start once.
PYTEST_WORKERS ?= -n 3 --dist loadfile

.PHONY: run test lint bench browser postgresql wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/stepline serve

# The browser tests drive Debian's Chromium; install it when missing and we may.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nginx-light >/dev/null; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium nginx-light'" >&2; exit 1; fi; \
	fi
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; fi; \
	fi

# The history tests start a real PostgreSQL server of their own (initdb, pg_ctl): install its
# binaries when they are missing and we may.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL is missing: run 'sudo apt-get install postgresql'" >&2; exit 1; fi; \
	fi

# The MCP reference server from npm, at the version its lock file pins: a peer for the benchmarks,
# and a server whose results hold every kind of content for the tests.
REFERENCE := tests/reference
REFERENCE_STAMP := $(REFERENCE)/node_modules/.installed

$(REFERENCE_STAMP): $(REFERENCE)/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "npm is missing: run 'sudo apt-get install nodejs npm' (Node.js 18 or later)" >&2; exit 1; fi; \
	fi
	npm ci --prefix $(REFERENCE) --no-audit --no-fund --loglevel=error
	touch $(REFERENCE_STAMP)

# The MCP Inspector from npm, at the version its lock file pins: the tests drive its CLI mode against
# Stepline's own MCP server. After the reference server, whose recipe installs npm when it is missing.
INSPECTOR := tests/inspector
INSPECTOR_STAMP := $(INSPECTOR)/node_modules/.installed

$(INSPECTOR_STAMP): $(INSPECTOR)/package-lock.json | $(REFERENCE_STAMP)
	npm ci --prefix $(INSPECTOR) --no-audit --no-fund --loglevel=error
	touch $(INSPECTOR_STAMP)

test: $(TEST_STAMP) $(REFERENCE_STAMP) $(INSPECTOR_STAMP) browser postgresql
	$(BIN)/ruff check web tests
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check web tests

bench: $(TEST_STAMP) $(REFERENCE_STAMP) $(INSPECTOR_STAMP) postgresql
	$(BIN)/python -m tests.benchmarks.run_all

# What a user of the wheel gets: `pip install .` into a fresh venv, then `stepline serve` from
# another directory must serve every page, asset and a whole run.
wheel-check: $(TEST_STAMP)
	$(BIN)/python tests/wheel_check.py

clean:
	rm -rf $(VENV) .stepline
