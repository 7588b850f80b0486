# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint bench install clean browser

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the local CPU wheel; any other version pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/atlas demo

test: $(STAMP) lint browser
	$(PY) -m pytest -q

# the browser tests drive Debian's headless chromium: installed here when missing (as root, or with sudo)
browser:
	@bash .ci/ensure-chromium

# unit tier only: no database, browser, network or model training (well under a minute)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m unit

lint: $(STAMP)
	$(VENV)/bin/ruff check atlas ingest queries atlas_cli explorer bench tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $$(mktemp -d)

bench: $(STAMP)
	$(PY) -m bench

clean:
	-$(VENV)/bin/atlas db stop
	rm -rf $(VENV) .bench-venvs .atlas atlas-demo .pytest_cache
