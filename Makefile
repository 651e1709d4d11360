# Every target creates or refreshes the virtual environment it needs by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast test-versions test-cluster test-browser lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e ".[dev,demo]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not cluster and not browser"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not e2e and not soak and not cluster and not browser"

# PostgreSQL and Redis (apt-get, as root), the Celery provider, then the cluster tests (tests/cluster).
test-cluster: $(STAMP)
	@start=$$(date +%s); bash scripts/cluster/install.sh \
	&& $(BIN)/python -m pytest -q -p no:cacheprovider -m cluster tests/cluster; status=$$?; \
	echo "make test-cluster: $$(( $$(date +%s) - start )) s (installs included)"; exit $$status

# Debian's chromium and chromium-driver (apt-get, as root, once; no browser download), Selenium
# (the "browser" extra), then the browser suite against a real api-server (tests/browser).
test-browser: $(STAMP)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
	@$(BIN)/python -c "import selenium" 2>/dev/null || $(BIN)/pip install -q -e ".[dev,demo,browser]"
	$(BIN)/python -m pytest -q -p no:cacheprovider -m browser tests/browser

# The lowest Airflow pyproject.toml claims, in its own venv with the pins that keep it working
# (ci/constraints-airflow-$(AIRFLOW_LOWEST).txt), runs the unit and integration suites. The newest
# supported Airflow is the one in .venv, which `make test` already runs everything on. The suites
# mostly wait on the emulator, so two pytest-xdist workers halve their wall time on 2 cores.
AIRFLOW_LOWEST := 3.3.0
LOWEST_VENV := .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed-$(AIRFLOW_LOWEST)

$(LOWEST_STAMP): pyproject.toml ci/constraints-airflow-$(AIRFLOW_LOWEST).txt
	@test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q -U pip
	$(LOWEST_VENV)/bin/pip install -q -c ci/constraints-airflow-$(AIRFLOW_LOWEST).txt -e ".[dev]" pytest-xdist
	@rm -f $(LOWEST_VENV)/.installed-*
	@touch $@

test-versions: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python ci/check_airflow_floor.py
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 tests/unit tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build *.egg-info .pytest_cache .mypy_cache .demo
