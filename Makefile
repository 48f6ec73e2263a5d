# Entry points a newcomer needs; see README.md.
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-slow compile compare image bench-soup bench-ops bench-train bench-memory bench-step-start clean

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

compare: setup
	$(BIN)/bettersynth compare --chart compare.png

IMAGE_TAG ?= 0.1.0
REGISTRY ?=
image:
	@command -v docker >/dev/null || { echo "make image needs Docker with BuildKit"; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.gpu -t $(REGISTRY)bettersynth-gpu:$(IMAGE_TAG) .
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.cpu -t $(REGISTRY)bettersynth-cpu:$(IMAGE_TAG) .
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.mlflow -t $(REGISTRY)bettersynth-mlflow:$(IMAGE_TAG) .

bench-soup: setup
	$(BIN)/python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8 --markdown benchmarks/results/soup.md

# DJ_PYTHON: a separate venv with py-data-juicer 1.6.1 (see benchmarks/README.md); without it DJ is skipped.
bench-ops: setup
	$(BIN)/python benchmarks/bench_ops.py --samples 300 --rounds 3 $(if $(DJ_PYTHON),--dj-python $(DJ_PYTHON))

bench-train: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_train.py --samples 192 --repeats 5 --markdown benchmarks/results/train.md

bench-memory: setup
	$(BIN)/python benchmarks/bench_memory.py --sizes 10000 100000 --markdown benchmarks/results/memory.md

bench-step-start: setup
	$(BIN)/python benchmarks/bench_step_start.py --repeats 3

clean:
	rm -rf local_outputs mlruns mlflow.db models data/demo data/variants .dvc-remote .dvc/cache
