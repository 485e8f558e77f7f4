# Two commands do all the set-up on a fresh machine (Python 3.10+, Java 17+):
#   make run    creates .venv/ if missing, installs the project, runs the job on the bundled data
#   make test   the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
PYTEST_ARGS ?=

# Tools some tests drive (a browser for the report, docker-compose to validate the compose file). Installed with
# apt-get when missing and running as root; otherwise those tests skip with a reason (and fail under CI=true).
SYSTEM_TOOLS ?= chromium:chromium docker-compose:docker-compose
# Files some tests need (a glob, then its Debian package): the PostgreSQL server the warehouse tests start on
# 127.0.0.1 with a throwaway data directory, and its JDBC driver.
SYSTEM_FILES ?= /usr/lib/postgresql/*/bin/initdb:postgresql /usr/share/java/postgresql.jar:libpostgresql-jdbc-java

.PHONY: install run test check format clean system-deps dashboard

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (found " + sys.version.split()[0] + "); set PYTHON=python3.x")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
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

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff check segmentation jobs tests scripts
	$(VENV)/bin/ruff format --check segmentation jobs tests scripts

format: install
	$(VENV)/bin/ruff format segmentation jobs tests scripts
	$(VENV)/bin/ruff check --fix segmentation jobs tests scripts

clean:
	rm -rf output spark-warehouse .pytest_cache
