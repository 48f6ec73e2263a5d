# Entry points a newcomer needs; see README.md.
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-slow compile clean

setup: $(VENV)/.installed

# torch and torchvision first, pinned, so pip takes the CPU-capable wheels it already
# has instead of resolving a newer CUDA build through another dependency.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/bettersynth quickstart

test: setup
	$(BIN)/python -m pytest -x -q

test-slow: setup
	$(BIN)/python -m pytest -x -q -m slow

compile: setup
	$(BIN)/bettersynth compile --output data_centric_loop.yaml

clean:
	rm -rf local_outputs mlruns mlflow.db models data/demo data/variants .dvc-remote .dvc/cache
