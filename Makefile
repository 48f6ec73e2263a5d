# Entry points a newcomer needs; see README.md.
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-slow test-faults test-load compile compare image bench bench-soup bench-soup-1g bench-ops bench-train bench-memory bench-step-start clean

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

# Every fault case (slow ones too), then the README's reliability table from the JUnit report.
# The README gets it only where it has the reliability markers (see tests/faults/reliability_table.py).
test-faults: setup
	-$(BIN)/python -m pytest -q tests/faults -m 'not gpu' --ignore=tests/faults/test_faults_load.py --junitxml=build/faults.xml
	$(BIN)/python tests/faults/reliability_table.py build/faults.xml --output build/reliability.md \
		$(if $(shell grep -l 'reliability:begin' README.md),--readme README.md)

# Eight pipelines at once against one MLflow server (PostgreSQL where installed): 20-30 minutes on 2 cores.
test-load: setup
	$(BIN)/python -m pytest -q -s -m slow tests/faults/test_faults_load.py

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

# Every benchmark runs its contenders in fresh processes, interleaved, and reports median per-round
# ratios (benchmarks/harness.py). `make bench` runs them all at sizes that fit in about 10 minutes on
# 2 cores and writes one table; the per-benchmark targets below run the README's sizes.
RESULTS := benchmarks/results
# DJ_PYTHON: a separate venv with py-data-juicer 1.6.1 (see benchmarks/README.md); without it DJ is skipped.
DJ_FLAG = $(if $(DJ_PYTHON),--dj-python $(DJ_PYTHON))

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8 --rounds 3 --json $(RESULTS)/soup.json
	$(BIN)/python benchmarks/bench_ops.py --samples 64 --num-workers 0 1 --rounds 3 $(DJ_FLAG) --json $(RESULTS)/ops.json
	$(BIN)/python benchmarks/bench_train.py --samples 96 --rounds 3 --json $(RESULTS)/train.json
	$(BIN)/python benchmarks/bench_memory.py --sizes 2000 20000 --rounds 3 --json $(RESULTS)/memory.json
	$(BIN)/python benchmarks/bench_merge.py --rows 20000 200000 --rounds 3 --json $(RESULTS)/merge.json
	$(BIN)/python benchmarks/bench_step_start.py --rounds 3 --modules bettersynth.steps.process bettersynth.steps.register --json $(RESULTS)/step_start.json
	$(BIN)/python benchmarks/harness.py table $(RESULTS)/soup.json $(RESULTS)/ops.json $(RESULTS)/train.json $(RESULTS)/memory.json $(RESULTS)/merge.json $(RESULTS)/step_start.json --output $(RESULTS)/bench.md
	@cat $(RESULTS)/bench.md

bench-soup: setup
	$(BIN)/python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8 --rounds 3 --json $(RESULTS)/soup.json

# 1 GiB checkpoints: needs about 9 GiB free on the temp folder's disk (8 ingredients + the soup).
bench-soup-1g: setup
	$(BIN)/python benchmarks/bench_soup.py --size-mb 1024 --counts 2 4 8 --rounds 3 --json $(RESULTS)/soup_1g.json

bench-ops: setup
	$(BIN)/python benchmarks/bench_ops.py --samples 128 --num-workers 0 1 --rounds 3 $(DJ_FLAG) --json $(RESULTS)/ops.json

bench-train: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_train.py --samples 192 --rounds 5 --json $(RESULTS)/train.json

bench-memory: setup
	$(BIN)/python benchmarks/bench_memory.py --sizes 10000 100000 --rounds 3 --json $(RESULTS)/memory.json
	$(BIN)/python benchmarks/bench_merge.py --rows 100000 1000000 --rounds 3 --json $(RESULTS)/merge.json

bench-step-start: setup
	$(BIN)/python benchmarks/bench_step_start.py --rounds 3 --json $(RESULTS)/step_start.json

clean:
	rm -rf local_outputs mlruns mlflow.db models data/demo data/variants .dvc-remote .dvc/cache
