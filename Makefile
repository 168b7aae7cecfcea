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

.PHONY: demo test lint typecheck pytest bench clean

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

pytest: $(VENV)/.installed-dev
	$(if $(SERENDIB_TEST_POSTGRES_URL)$(PG_UP),SERENDIB_TEST_POSTGRES_URL=$${SERENDIB_TEST_POSTGRES_URL:-$(PG_URL)}) \
		$(VENV)/bin/pytest

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
