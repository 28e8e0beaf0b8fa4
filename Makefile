# Zenith: `make run` for a local demo, `make test` for the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test test-fast faults e2e bench lint format typecheck migrate clean

# Running needs requirements/base.txt only; tests and tooling add requirements/dev.txt.
$(VENV)/.installed-base: requirements/base.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.installed: $(VENV)/.installed-base requirements/dev.txt
	$(PY) -m pip install --quiet -r requirements/dev.txt
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed-base
	$(PY) scripts/run_dev.py

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not faults and not e2e"

faults: install
	$(PY) -m pytest -m faults

e2e: install
	$(PY) -m pytest -m e2e

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install
	$(VENV)/bin/mypy .

migrate: install
	$(PY) manage.py migrate

clean:
	rm -rf var zenith.db zenith.db-wal zenith.db-shm .pytest_cache
