"""The filter and caption steps: run a recipe over a dataset and account for every sample.

A step killed part-way resumes at its last completed chunk when started again
on the same output folder; a step already finished (``step.json`` names the
same fingerprint) does no work and says so; an unreachable tracking server
fails it before any work, naming the URL, and keeps whatever is on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow

from bettersynth.ops import OPERATORS
from bettersynth.ops.base import Filter
from bettersynth.ops.runner import DEFAULT_CHUNK_SIZE, run_recipe
from bettersynth.ops.step_files import run_fingerprint
from bettersynth.recipe import Recipe
from bettersynth.sample_sheet import write_step_pictures
from bettersynth.tracking import step_run

log = logging.getLogger(__name__)

PER_OP_COUNTS = ("in", "kept", "filtered", "rejected", "added")  # logged as op/<count>, step = position in the recipe


def seeded_fraction(fraction: float, seed: int):
    """A selector that picks a stable ``fraction`` of samples by hashing (seed, id).

    Why hashing instead of ``random``: the choice of a sample does not depend on
    the order or sharding of the dataset, so shards agree with a whole run.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")

    def select(op, sample) -> bool:
        digest = hashlib.sha256(f"{seed}:{sample.id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    return select


def filter_stat_keys(recipe: Recipe) -> list[str]:
    """The stats the recipe's filters score, in recipe order (what the histograms show)."""
    keys = []
    for spec in recipe.ops:
        op_cls = OPERATORS.get(spec.name)
        if issubclass(op_cls, Filter) and op_cls.stat_key not in keys:
            keys.append(op_cls.stat_key)
    return keys


def log_step_report(recipe: Recipe, input_dir: Path, out_dir: Path, summary: dict) -> None:
    """Counts as metrics (per op with the op's position as step), pictures and accounting as artifacts."""
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    for counts in summary.get("per_op", []):
        for name in PER_OP_COUNTS:
            mlflow.log_metric(f"op/{name}", counts[name], step=counts["step"])
    for name in ("report.json", "outcomes.jsonl", "rejected.jsonl"):
        if (Path(out_dir) / name).exists():
            mlflow.log_artifact(str(Path(out_dir) / name), artifact_path="accounting")
    with tempfile.TemporaryDirectory() as scratch:
        title = f"{recipe.name or 'recipe'} ({recipe.hash()[:12]})"
        write_step_pictures(Path(input_dir), Path(out_dir), filter_stat_keys(recipe), Path(scratch), title=title)
        mlflow.log_artifacts(scratch, artifact_path="sheets")


def process_dataset(
    step: str,
    input_dir: Path,
    recipe_path: Path,
    out_dir: Path,
    model_root: Path,
    fraction: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict:
    """Run ``recipe_path`` on ``input_dir/samples.jsonl`` into ``out_dir``; log counts to MLflow.

    ``fraction`` < 1 applies the recipe to a seeded subset only (e.g. re-caption
    20% of the data); the other samples pass through as kept.
    """
    recipe = Recipe.load(recipe_path)
    select = seeded_fraction(fraction, seed) if fraction < 1.0 else None
    resume_key = f"fraction={fraction},seed={seed}"
    fingerprint = run_fingerprint(recipe.hash(), Path(input_dir) / "samples.jsonl", chunk_size, resume_key)
    done = _finished_step(Path(out_dir), fingerprint)
    if done is not None:
        log.info("%s: step %r already finished for this recipe and input (step.json); nothing to do", out_dir, step)
        return done
    (Path(out_dir) / "step.json").unlink(missing_ok=True)  # from a run on other inputs: no longer true
    params = {"recipe.name": recipe.name or Path(recipe_path).stem, "recipe.hash": recipe.hash(), "fraction": fraction, "seed": seed}
    params |= recipe.flat_params()
    with step_run(step, params=params, tags={"recipe.hash": recipe.hash()}):
        report = run_recipe(
            recipe,
            input_jsonl=Path(input_dir) / "samples.jsonl",
            dataset_root=Path(input_dir),
            out_dir=Path(out_dir),
            model_root=Path(model_root),
            batch_size=batch_size,
            select=select,
            chunk_size=chunk_size,
            resume_key=resume_key,
        )
        summary = asdict(report)
        log_step_report(recipe, Path(input_dir), Path(out_dir), summary)
        mlflow.log_text(Path(recipe_path).read_text(), "recipe.yaml")
        summary["recipe_hash"] = recipe.hash()
        summary["mlflow_run_id"] = mlflow.active_run().info.run_id
    tmp = Path(out_dir) / "step.json.partial"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, Path(out_dir) / "step.json")
    return summary


def _finished_step(out_dir: Path, fingerprint: str) -> dict | None:
    """The summary of a finished run of this step on the same inputs, if the folder holds one."""
    try:
        summary = json.loads((out_dir / "step.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("fingerprint") == fingerprint and summary.get("mlflow_run_id") else None
