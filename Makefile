# Two entry points for a fresh machine with Python 3.11:
#   make demo   the main job: the toy benchmark (config/toy.yaml) through the workflow on CPU,
#               report in results/toy/report.md
#   make test   lint (ruff, snakefmt), then the test suite on two workers (dry-runs, a shortened toy run
#               of the workflow and a SLURM cluster on this machine included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test demo study benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,workflow]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow

test: lint
	$(BIN)/python -m pytest -n 2

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake all --cores 2 --configfile config/toy.yaml
	cat results/toy/report.md

# The toy study (config/toy-study.yaml over config/toy.yaml): the toy's verdicts over seeds, hours on 2 cores;
# run it again after an interruption to resume where it stopped. Report in results/toy-study/report.md.
study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake all --cores 2 --rerun-incomplete \
		--configfile config/toy.yaml config/toy-study.yaml
	cat results/toy-study/report.md

benchmark: $(STAMP)
	$(BIN)/python benchmarks/lorad_layer.py

clean:
	rm -rf $(VENV) .snakemake results
