# Two commands do all the set-up on a fresh machine (Python 3.10+, Java 17+):
#   make run    creates .venv/ if missing, installs the project, runs the job on the bundled data
#   make test   the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install run test check format clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (found " + sys.version.split()[0] + "); set PYTHON=python3.x")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/segment-customers $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff check segmentation jobs tests scripts
	$(VENV)/bin/ruff format --check segmentation jobs tests scripts

format: install
	$(VENV)/bin/ruff format segmentation jobs tests scripts
	$(VENV)/bin/ruff check --fix segmentation jobs tests scripts

clean:
	rm -rf output spark-warehouse .pytest_cache
