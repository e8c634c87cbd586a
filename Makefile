# clickstream — `make run` (install + serve on embedded ClickHouse), `make test` (every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install run test lint unit bench demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/clickstream serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy clickstream collector flusher stitcher load

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q tests/unit

bench: install
	$(PY) -m load.bench

demo: install
	$(PY) -m deploy.demo

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
