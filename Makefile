# Slimy: `make run` starts everything on embedded defaults, `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench faults install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py runall

# Tests need PostgreSQL (DATABASE_URL, default: the local server) and redis-server on PATH.
test: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://root@127.0.0.1:5432/root} $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://root@127.0.0.1:5432/root} $(PY) manage.py bench all

faults: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://root@127.0.0.1:5432/root} $(PY) -m pytest -q -m faults tests/faults --run-faults

clean:
	rm -rf $(VENV) .data
