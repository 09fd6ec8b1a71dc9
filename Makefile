# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

# The Airflow and Dagster integrations are tested with the real libraries, each in a venv of its own
# (tests/test_integrations.py runs them as subprocesses): pinned here, for Python 3.10 to 3.12. Airflow's
# constraints file is not reachable from here (only PyPI is): the pin is what its resolver picks with SQLAlchemy 2.
AIRFLOW_PIN ?= apache-airflow==3.3.2
DAGSTER_PIN ?= dagster==1.11.16

.PHONY: demo test bench lint clean install integrations

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## the example cohorts applied to a local emulator, end to end
	$(BIN)/cohortsync demo --dir .

test: $(STAMP)  ## every test; PostgreSQL and MariaDB tests skip when no server answers (CI makes them mandatory)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)  ## pyflakes and pycodestyle errors, and the import layers (lint-imports); CI runs it
	$(BIN)/ruff check --isolated --select E,F,W --ignore E501 reconciler tests bench
	$(BIN)/lint-imports

integrations: .venv-airflow/.installed .venv-dagster/.installed  ## the venvs the Airflow and Dagster tests run in

.venv-airflow/.installed: Makefile
	rm -rf .venv-airflow && $(PYTHON) -m venv .venv-airflow
	.venv-airflow/bin/pip install --quiet --upgrade pip
	.venv-airflow/bin/pip install --quiet '$(AIRFLOW_PIN)' 'requests>=2.31'
	touch $@

.venv-dagster/.installed: Makefile
	rm -rf .venv-dagster && $(PYTHON) -m venv .venv-dagster
	.venv-dagster/bin/pip install --quiet --upgrade pip
	.venv-dagster/bin/pip install --quiet '$(DAGSTER_PIN)' 'requests>=2.31'
	touch $@

bench: $(STAMP)  ## benchmarks at a small default size, each beside its baseline
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-airflow .venv-dagster state/*.db state/*.db-* state/*.txt state/*.log .pytest_cache .hypothesis
