"""The filter and caption steps: run a recipe over a dataset and account for every sample."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow

from bettersynth.ops import OPERATORS
from bettersynth.ops.base import Filter
from bettersynth.ops.runner import run_recipe
from bettersynth.recipe import Recipe
from bettersynth.sample_sheet import write_step_pictures
from bettersynth.tracking import step_run

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
) -> dict:
    """Run ``recipe_path`` on ``input_dir/samples.jsonl`` into ``out_dir``; log counts to MLflow.

    ``fraction`` < 1 applies the recipe to a seeded subset only (e.g. re-caption
    20% of the data); the other samples pass through as kept.
    """
    recipe = Recipe.load(recipe_path)
    select = seeded_fraction(fraction, seed) if fraction < 1.0 else None
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
        )
        summary = asdict(report)
        log_step_report(recipe, Path(input_dir), Path(out_dir), summary)
        mlflow.log_text(Path(recipe_path).read_text(), "recipe.yaml")
        summary["recipe_hash"] = recipe.hash()
        summary["mlflow_run_id"] = mlflow.active_run().info.run_id
    (Path(out_dir) / "step.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
