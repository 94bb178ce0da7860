# `make run` serves the demo at http://127.0.0.1:8000; `make test` runs every test.
# Both set everything up first: nothing is assumed installed but Python 3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
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

test: $(STAMP) browser
	$(BIN)/ruff check web tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check web tests

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.run_all

clean:
	rm -rf $(VENV) .stepline
