# clickstream — `make run` (install + serve on embedded ClickHouse), `make test` (sets itself up, runs every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install system run test lint unit bench demo vendor-charts clean

# Quiet unless something fails: pip's output goes to $(VENV)/install.log and is shown on failure.
$(VENV)/.installed: pyproject.toml
	@echo "installing clickstream and its test tools into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[test]'; } > $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; echo "install failed (log above)"; exit 1; }
	@touch $@

install: $(VENV)/.installed

# System packages the tests need (chromium, wrk, node/npm): installed as root on Debian, else explained.
system:
	@bash tests/setup-system.sh

DATA_DIR ?= data

# First start: random secrets for the query port (dashboards, `clickstream sql`) and POST /stitch,
# kept in the data directory (0600).
$(DATA_DIR)/.sql_password $(DATA_DIR)/.stitch_token:
	@mkdir -p $(DATA_DIR)
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))" > $@

run: install $(DATA_DIR)/.sql_password $(DATA_DIR)/.stitch_token
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) CLICKSTREAM_SQL_PASSWORD=$$(cat $(DATA_DIR)/.sql_password) \
	CLICKSTREAM_STITCH_TOKEN=$$(cat $(DATA_DIR)/.stitch_token) $(BIN)/clickstream serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy clickstream collector flusher stitcher reports load deploy
	$(BIN)/lint-imports --no-logo

test: system install lint
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q tests/unit

bench: install
	$(PY) -m load.bench

# The demo site; on the pipeline of `make run` when that runs (same data directory and secrets), else
# with its own. Then open http://127.0.0.1:8123/dashboard (user dashboards, password in data/.sql_password).
demo: install $(DATA_DIR)/.sql_password $(DATA_DIR)/.stitch_token
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) CLICKSTREAM_SQL_PASSWORD=$$(cat $(DATA_DIR)/.sql_password) \
	CLICKSTREAM_STITCH_TOKEN=$$(cat $(DATA_DIR)/.stitch_token) $(PY) -m deploy.demo

# Re-vendor the dashboard's chart library (uPlot) from npm: deploy/vendor-charts.sh [VERSION].
vendor-charts:
	@bash deploy/vendor-charts.sh $(UPLOT_VERSION)

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
