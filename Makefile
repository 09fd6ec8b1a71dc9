# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test bench lint clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## the example cohorts applied to a local emulator, end to end
	$(BIN)/cohortsync demo

test: $(STAMP)  ## every test; PostgreSQL and MariaDB tests skip when no server answers (CI makes them mandatory)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)  ## pyflakes and pycodestyle errors, and the import layers (lint-imports); CI runs it
	$(BIN)/ruff check --isolated --select E,F,W --ignore E501 reconciler tests bench
	$(BIN)/lint-imports

bench: $(STAMP)  ## benchmarks at a small default size, each beside its baseline
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) state/*.db state/*.db-* state/*.txt state/*.log .pytest_cache .hypothesis
