# nixlet: `make test` and `make demo` set up everything on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench campaign lint typecheck system clean

# System packages the suite drives for real (rsync merges stores). No systemd here, so
# nothing needs starting for the core; later issues add their services to scripts/.
system:
	@bash scripts/install-system.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: system $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m mypy --strict
	$(PY) -m ruff check src tests benchmarks demos
	$(VENV)/bin/lint-imports

# The long crash and concurrency campaigns (short versions run in `make test`).
campaign: system $(STAMP)
	NIXLET_CAMPAIGN=long $(PY) -m pytest -q -p no:cacheprovider -m long

typecheck: $(STAMP)
	$(PY) -m mypy --strict

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks demos
	$(VENV)/bin/lint-imports

demo: $(STAMP)
	$(PY) demos/pipeline.py

bench:
	@bash benchmarks/bench.sh

clean:
	rm -rf $(VENV) .venv-bench .mypy_cache .pytest_cache .ruff_cache .hypothesis
