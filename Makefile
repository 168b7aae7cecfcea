# Entry points: `make demo` runs the main job; `make test` runs lint, types and tests.
# Each creates .venv and installs what it needs on a fresh machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
SOURCES := src tests examples bench

# PostgreSQL tests run when a server answers on the default test address (as on CI).
PG_URL := postgresql://postgres@127.0.0.1:5432/test
PG_UP = $(shell $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null && echo yes)

# The browser tests drive Debian's Chromium through Playwright (no browser is downloaded).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint typecheck pytest bench soak clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/serendib demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

# Installs Debian's chromium when it is missing and we may (root, apt); otherwise the browser
# tests skip locally (and fail on CI, where CI=true).
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq; \
		if apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
				|| echo "make chromium: apt-get install chromium failed; browser tests will skip"; \
		else echo "make chromium: apt has no chromium package; browser tests will skip"; fi; \
	else echo "make chromium: $(CHROMIUM) is missing; browser tests will skip (apt-get install chromium)"; fi

pytest: $(VENV)/.installed-dev chromium
	$(if $(SERENDIB_TEST_POSTGRES_URL)$(PG_UP),SERENDIB_TEST_POSTGRES_URL=$${SERENDIB_TEST_POSTGRES_URL:-$(PG_URL)}) \
		$(VENV)/bin/pytest

test: lint typecheck pytest

soak: $(VENV)/.installed-dev
	SERENDIB_SOAK=1 $(VENV)/bin/pytest tests/faults/test_worker_crashes.py --timeout 900

bench: $(VENV)/.installed-dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
