"""A data step killed with SIGKILL at a random point resumes from its last completed chunk and ends
byte-identical to an uninterrupted run; partial files never carry final names; a second run does nothing."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from robust_data import clean_dataset, write_lines

from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.recipes.step_files import CHECKPOINT, OUTPUTS, REPORT, RESUME_DIR
from bettersynth.steps.process import process_dataset

CHUNK = 4
RECIPE = {"name": "resume", "process": [
    {"words_num_filter": {"min_num": 3}},
    {"image_shape_filter": {"min_width": 11, "max_height": 11}},
    {"image_size_filter": {"min_size": "100B"}},
]}
CHILD = """
import sys
from pathlib import Path
from bettersynth.steps.process import process_dataset
data, recipe, out, chunk = sys.argv[1:]
process_dataset("filter", Path(data), Path(recipe), Path(out), Path(data), chunk_size=int(chunk))
"""
COMPARED = (*OUTPUTS, REPORT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume-data")
    jsonl = clean_dataset(root, 240)
    lines = jsonl.read_bytes().splitlines()
    lines[17:17] = [b"{broken", b'{"id": "s00001", "text": "dup"}']  # a bad line and a duplicate id, early on
    write_lines(jsonl, lines)
    recipe = root.parent / f"{root.name}-recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    return root, recipe


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory, mlflow_store) -> Path:
    """The uninterrupted run."""
    root, recipe = dataset
    out = tmp_path_factory.mktemp("reference") / "out"
    process_dataset("filter", root, recipe, out, root, chunk_size=CHUNK)
    return out


def _kill_mid_run(root: Path, recipe: Path, out: Path, after_chunks: int, extra_delay: float) -> int:
    """Start the step in a child, SIGKILL it once ``after_chunks`` chunks are checkpointed (+ a delay);
    returns the chunks done at the kill. Final names must be absent at that moment."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(recipe), str(out), str(CHUNK)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / RESUME_DIR / CHECKPOINT
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if json.loads(checkpoint.read_text())["chunks"] >= after_chunks:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.002)
        time.sleep(extra_delay)
        assert child.poll() is None, f"step ended before the kill (rc {child.returncode}): {child.stderr.read()[-2000:]!r}"
        child.send_signal(signal.SIGKILL)
        child.wait()
        for name in COMPARED:
            assert not (out / name).exists(), f"{name} visible under its final name before the step finished"
        return json.loads(checkpoint.read_text())["chunks"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_robust_sigkill_then_rerun_is_byte_identical(dataset, reference, tmp_path, mlflow_store, caplog, seed):
    root, recipe = dataset
    rng = random.Random(seed)
    out = tmp_path / "out"
    n_chunks = 242 // CHUNK + 1
    done = _kill_mid_run(root, recipe, out, rng.randint(1, n_chunks // 2), rng.uniform(0, 0.02))
    assert 1 <= done < n_chunks

    with caplog.at_level(logging.INFO, logger="bettersynth"):
        process_dataset("filter", root, recipe, out, root, chunk_size=CHUNK)
    assert f"resuming after {done} completed chunk(s)" in caplog.text
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert sorted(p.relative_to(out) for p in (out / "images").rglob("*")) == sorted(
        p.relative_to(reference) for p in (reference / "images").rglob("*"))
    assert not (out / RESUME_DIR).exists()


def test_robust_second_run_of_a_finished_step_does_no_work(dataset, reference, mlflow_store, caplog):
    root, recipe = dataset
    stamps = {name: (reference / name).stat().st_mtime_ns for name in (*COMPARED, "step.json")}
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with caplog.at_level(logging.INFO, logger="bettersynth"):
        summary = process_dataset("filter", root, recipe, reference, root, chunk_size=CHUNK)
    assert "already finished" in caplog.text and "nothing to do" in caplog.text
    assert {name: (reference / name).stat().st_mtime_ns for name in stamps} == stamps
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before
    assert summary == json.loads((reference / "step.json").read_text())


def test_robust_runner_reuses_a_finished_folder_only_for_the_same_inputs(dataset, tmp_path, caplog):
    root, recipe_path = dataset
    recipe = Recipe.load(recipe_path)
    out = tmp_path / "out"
    first = run_recipe(recipe, root / "samples.jsonl", root, out, chunk_size=CHUNK)
    stamp = (out / "samples.jsonl").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="bettersynth"):
        assert run_recipe(recipe, root / "samples.jsonl", root, out, chunk_size=CHUNK) == first
    assert "nothing to do" in caplog.text and (out / "samples.jsonl").stat().st_mtime_ns == stamp
    other = Recipe.from_dict({"process": [{"words_num_filter": {"min_num": 11}}]})
    changed = run_recipe(other, root / "samples.jsonl", root, out, chunk_size=CHUNK)
    assert changed.kept == 0 and changed.fingerprint != first.fingerprint
    assert json.loads((out / REPORT).read_text())["fingerprint"] == changed.fingerprint


def test_robust_chunk_size_does_not_change_the_samples(dataset, tmp_path):
    root, recipe_path = dataset
    recipe = Recipe.load(recipe_path)
    outs = {size: tmp_path / f"out{size}" for size in (1, 7, 10_000)}
    reports = {size: run_recipe(recipe, root / "samples.jsonl", root, out, chunk_size=size) for size, out in outs.items()}
    texts = {(out / "samples.jsonl").read_bytes() for out in outs.values()}
    rejected = {(out / "rejected.jsonl").read_bytes() for out in outs.values()}
    assert len(texts) == 1 and len(rejected) == 1
    counts = {(r.n_in, r.kept, r.filtered, r.rejected, json.dumps(r.per_op)) for r in reports.values()}
    assert len(counts) == 1
    assert reports[1].n_in == 242 and reports[1].rejected == 2
