# Slimy: `make run` starts everything on embedded defaults, `make test` runs the suite, `make lint` the checks.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests, lint and Django's checks need PostgreSQL (DATABASE_URL, default: the local server).
DB := DATABASE_URL=$${DATABASE_URL:-postgres://root@127.0.0.1:5432/root}
# The suite without the markers that start real processes or browsers (e2e, faults, browser tests).
FAST_MARKERS := not e2e and not faults and not browser

.PHONY: run test test-fast lint format bench faults install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench,lint]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py runall

# Tests need PostgreSQL and redis-server on PATH.
test: $(STAMP)
	$(DB) $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(DB) $(PY) -m pytest -q -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Every check CI runs before the tests; the configuration of each tool is in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(DB) $(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(DB) $(PY) manage.py makemigrations --check --dry-run
	$(DB) $(PY) manage.py check

# Rewrites files: import order and the other safe fixes, then the formatting.
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(DB) $(PY) manage.py bench all

faults: $(STAMP)
	$(DB) $(PY) -m pytest -q -m faults tests/faults --run-faults

clean:
	rm -rf $(VENV) .data
