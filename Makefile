# Two entry points for a fresh machine with Python 3.11:
#   make demo   the main job: the toy benchmark (config/toy.yaml) through the workflow on CPU,
#               report in results/toy/report.md
#   make test   the test suite (lint, dry-runs and a shortened toy run of the workflow included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,workflow]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake all --cores 2 --configfile config/toy.yaml
	cat results/toy/report.md

benchmark: $(STAMP)
	$(BIN)/python benchmarks/lorad_layer.py

clean:
	rm -rf $(VENV) .snakemake results
