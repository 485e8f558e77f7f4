# Two commands do all the set-up on a fresh machine (Python 3.10+, Java 17+):
#   make run    creates .venv/ if missing, installs the project, runs the job on the bundled data
#   make test   the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
PYTEST_ARGS ?= --durations=25

# Tools some tests drive (a browser for the report, docker-compose to validate the compose file). Installed with
# apt-get when missing and running as root; otherwise those tests skip with a reason (and fail under CI=true).
SYSTEM_TOOLS ?= chromium:chromium docker-compose:docker-compose
# Files some tests need (a glob, then its Debian package): the PostgreSQL server the warehouse tests start on
# 127.0.0.1 with a throwaway data directory, and its JDBC driver.
SYSTEM_FILES ?= /usr/lib/postgresql/*/bin/initdb:postgresql /usr/share/java/postgresql.jar:libpostgresql-jdbc-java

.PHONY: install run test smoke check format clean system-deps dashboard

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (found " + sys.version.split()[0] + "); set PYTHON=python3.x")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]" -c constraints.txt
	@touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/segment-customers $(ARGS)

# the dashboard over the published output (http://127.0.0.1:8501); OUTPUT=path for another output root
OUTPUT ?= output
dashboard: install
	$(VENV)/bin/segment-dashboard --output $(OUTPUT) $(ARGS)

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	for pair in $(SYSTEM_FILES); do glob=$${pair%%:*}; pkg=$${pair##*:}; \
	  ls $$glob >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing test tools:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them will skip"; \
	  else echo "note: missing$$missing (not root / no apt-get); the tests that need them will skip"; fi; fi

# The oldest supported Spark (managed platforms' 3.5) in a second venv: the bundled end-to-end run, the engine's
# equivalence with Spark ML, one cluster run. SMOKE=0 skips it.
SMOKE ?= 1
SMOKE_VENV ?= .venv-spark35
SMOKE_PYSPARK ?= pyspark==3.5.9
SMOKE_TESTS ?= "tests/test_lloyd.py::test_from_spark_starts_every_model_is_the_full_spark_ml_fit[driver]" \
	"tests/test_lloyd.py::test_starts_are_spark_ml_starts[driver]" \
	tests/test_lloyd.py::test_sweep_diagnostics_and_stability_match_spark_computations \
	tests/test_e2e_online_retail.py::test_reconciles_to_the_row \
	tests/test_e2e_online_retail.py::test_every_customer_matches_the_hand_computed_features \
	tests/test_e2e_online_retail.py::test_recommendations_on_the_bundled_data \
	tests/test_cluster.py::test_cluster_run_equals_local_run

$(SMOKE_VENV)/.installed: pyproject.toml
	@test -x $(SMOKE_VENV)/bin/python || $(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SMOKE_VENV)/bin/python -m pip install --quiet -e ".[test]" "$(SMOKE_PYSPARK)"
	@touch $@

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ "$(SMOKE)" = 1 ]; then $(MAKE) --no-print-directory smoke; fi

smoke: $(SMOKE_VENV)/.installed
	@echo "smoke on $$($(SMOKE_VENV)/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)')"
	PYTHON=$(abspath $(SMOKE_VENV))/bin/python $(SMOKE_VENV)/bin/python -m pytest -p no:cacheprovider -W ignore::DeprecationWarning $(SMOKE_TESTS)

check: install
	$(VENV)/bin/ruff check segmentation jobs tests scripts
	$(VENV)/bin/ruff format --check segmentation jobs tests scripts

format: install
	$(VENV)/bin/ruff format segmentation jobs tests scripts
	$(VENV)/bin/ruff check --fix segmentation jobs tests scripts

clean:
	rm -rf output spark-warehouse .pytest_cache
