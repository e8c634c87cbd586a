# clickstream — `make run` (install + serve on embedded ClickHouse), `make test` (sets itself up, runs every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install system run test lint unit bench bench-views bench-large demo vendor-charts clean reliability soak

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

# The reliability suites (RELIABILITY.md) at full size: >= 20 kills per process, a 60 s sink outage,
# a 30-minute soak; figures in $(RELIABILITY_RESULTS). `make test` runs them at CI size.
RELIABILITY_RESULTS ?= /tmp/clickstream-reliability
reliability: install
	RELIABILITY_FULL=1 RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) $(PY) -m pytest -q -p no:cacheprovider -s tests/reliability

# The soak alone, longer: SOAK_S seconds at SOAK_RATE events/s (samples, JSON lines and soak.png in $(RELIABILITY_RESULTS)).
SOAK_S ?= 3600
SOAK_RATE ?= 200
soak: install
	RELIABILITY_FULL=1 RELIABILITY_SOAK_S=$(SOAK_S) RELIABILITY_SOAK_RATE=$(SOAK_RATE) RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) \
		$(PY) -m pytest -q -p no:cacheprovider -s tests/reliability/test_soak.py

# Dashboard views alone at 1 M and 10 M events (part of `make bench`), and at 100 M (not part of it).
bench-views: install
	$(PY) -m load.bench views

bench-large: install
	$(PY) -m load.bench views-large

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
