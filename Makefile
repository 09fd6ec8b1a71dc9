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

.PHONY: demo test soak bench lint clean install integrations integrations-dbt dbt-fixtures

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## the example cohorts applied to a local emulator, end to end
	$(BIN)/cohortsync demo --dir .

test: $(STAMP)  ## every test; PostgreSQL and MariaDB tests skip when no server answers (CI makes them mandatory)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -m 'not soak' $(PYTEST_ARGS)

soak: $(STAMP)  ## the replica fault schedules over ten more seeds (tests/test_replica_schedules.py): about 2.5 minutes on two workers
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -n 2 -m soak $(PYTEST_ARGS)

lint: $(STAMP)  ## pyflakes and pycodestyle errors, and the import layers (lint-imports); CI runs it
	$(BIN)/ruff check --isolated --select E,F,W --ignore E501 reconciler tests bench
	$(BIN)/lint-imports

# dbt is not a dependency of cohortsync (it reads dbt's JSON only): real dbt lives in a venv of its own for the
# tests that run it (tests/test_dbt_project.py). dbt-core 1.11+ needs a binary parser fetched at build time, so 1.10.
DBT_VENV ?= .venv-dbt
DBT_PIP ?= dbt-core~=1.10.0 dbt-postgres~=1.9.0
DBT_STAMP := $(DBT_VENV)/.installed-$(shell echo '$(DBT_PIP)' | cksum | cut -d' ' -f1)

integrations-dbt: $(DBT_STAMP)  ## real dbt-core + dbt-postgres in .venv-dbt, for the dbt tests

$(DBT_STAMP):
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/pip install --quiet $(DBT_PIP)
	rm -f $(DBT_VENV)/.installed-* && touch $@

dbt-fixtures: $(STAMP) $(DBT_STAMP)  ## regenerate tests/dbt/manifest.json and run_results.json with real dbt (PostgreSQL)
	$(BIN)/python -m tests.dbtproject

AIRFLOW_STAMP := .venv-airflow/.installed-$(shell echo '$(AIRFLOW_PIN)' | cksum | cut -d' ' -f1)
DAGSTER_STAMP := .venv-dagster/.installed-$(shell echo '$(DAGSTER_PIN)' | cksum | cut -d' ' -f1)

integrations: $(DBT_STAMP) $(AIRFLOW_STAMP) $(DAGSTER_STAMP)  ## the venvs the dbt, Airflow and Dagster tests run in

$(AIRFLOW_STAMP):
	rm -rf .venv-airflow && $(PYTHON) -m venv .venv-airflow
	.venv-airflow/bin/pip install --quiet --upgrade pip
	.venv-airflow/bin/pip install --quiet '$(AIRFLOW_PIN)' 'requests>=2.31'
	rm -f .venv-airflow/.installed-* && touch $@

$(DAGSTER_STAMP):
	rm -rf .venv-dagster && $(PYTHON) -m venv .venv-dagster
	.venv-dagster/bin/pip install --quiet --upgrade pip
	.venv-dagster/bin/pip install --quiet '$(DAGSTER_PIN)' 'requests>=2.31'
	rm -f .venv-dagster/.installed-* && touch $@

bench: $(STAMP)  ## benchmarks at a small default size, each beside its baseline
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DBT_VENV) .venv-airflow .venv-dagster state/*.db state/*.db-* state/*.txt state/*.log .pytest_cache .hypothesis
