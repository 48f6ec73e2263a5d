"""The filter and caption steps: run a recipe over a dataset and account for every sample.

A single-``process`` recipe streams through ``run_recipe``; a multi-round
recipe (``rounds:``) runs through ``run_rounds``, and the step's counts are
then followed per input line across all rounds, so both kinds report alike
(``STEP_COUNTS``), with each round's own counts beside them (``ROUND_COUNTS``).

A single-pass step killed part-way resumes at its last completed chunk when
started again on the same output folder (a multi-round step starts over); a
step already finished (``step.json`` names the same fingerprint) does no work
and says so; an unreachable tracking server fails it before any work, naming
the URL, and keeps whatever is on disk.
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
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.rounds import RoundsReport, run_rounds
from bettersynth.recipes.runner import DEFAULT_CHUNK_SIZE, OP_COUNTS, run_recipe
from bettersynth.recipes.step_files import STEP_RECORD, run_fingerprint
from bettersynth.reports.sample_sheet import write_step_pictures
from bettersynth.tracking.runs import step_run

log = logging.getLogger(__name__)

# Logged as op/<count>, step = the op's position in the recipe (all rounds' ops in order); replaced is part of filtered.
PER_OP_COUNTS = ("in", "kept", "filtered", "replaced", "rejected", "added")
# Logged as metrics of the step. n_in = kept_from_input + filtered + rejected; kept = kept_from_input + added_kept;
# filtered + rejected = replaced (a created sample was written in the input's place) + removed (nothing was).
STEP_COUNTS = ("n_in", "kept", "kept_from_input", "filtered", "rejected", "replaced", "removed", "added", "added_kept")
# Logged as round/<count>, step = round index (multi-round recipes). n_in = bypassed + kept + filtered + rejected;
# n_out = n_in - filtered - rejected + created_kept = n_in - removed + added (added: created beyond one per replaced).
ROUND_COUNTS = ("n_in", "selected", "bypassed", "kept", "filtered", "rejected", "created", "created_kept", "replaced", "added",
                "removed", "n_out")


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
    """Counts as metrics (per op with the op's position as step, per round with its index),
    pictures and accounting as artifacts."""
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for counts in summary.get("per_op", []):
        for name in PER_OP_COUNTS:
            mlflow.log_metric(f"op/{name}", counts.get(name, 0), step=counts["step"])
    for counts in summary.get("rounds", []):
        for name in ROUND_COUNTS:
            mlflow.log_metric(f"round/{name}", counts[name], step=counts["round"])
    if summary.get("rounds"):
        mlflow.set_tag("recipe.rounds", json.dumps([r["name"] for r in summary["rounds"]]))
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
    num_workers: int | None = None,
) -> dict:
    """Run ``recipe_path`` on ``input_dir/samples.jsonl`` into ``out_dir``; log counts to MLflow.

    ``fraction`` < 1 applies the recipe's mappers to a seeded subset only (e.g.
    re-caption 20% of the data; in every round of a multi-round recipe); the
    other samples pass the mappers unchanged. Returns the summary also written
    to ``out_dir/step.json``: ``STEP_COUNTS``, ``per_op`` and, for multi-round
    recipes, ``rounds``. ``num_workers`` (image decoding processes) defaults to
    one per spare core.
    """
    recipe = Recipe.load(recipe_path)
    select = seeded_fraction(fraction, seed) if fraction < 1.0 else None
    resume_key = f"fraction={fraction},seed={seed}"
    fingerprint = run_fingerprint(recipe.hash(), Path(input_dir) / "samples.jsonl", chunk_size, resume_key)
    done = _finished_step(Path(out_dir), fingerprint)
    if done is not None:
        log.info("%s: step %r already finished for this recipe and input (step.json); nothing to do", out_dir, step)
        return done
    (Path(out_dir) / STEP_RECORD).unlink(missing_ok=True)  # from a run on other inputs: no longer true
    params = {"recipe.name": recipe.name or Path(recipe_path).stem, "recipe.hash": recipe.hash(), "fraction": fraction, "seed": seed}
    params |= recipe.flat_params()
    with step_run(step, params=params, tags={"recipe.hash": recipe.hash()}, title=[step], recipe=params["recipe.name"]):
        if recipe.is_multi_round:
            report = run_rounds(recipe, Path(input_dir) / "samples.jsonl", Path(input_dir), Path(out_dir), model_root=Path(model_root),
                                batch_size=batch_size, num_workers=num_workers, select=select, chunk_size=chunk_size)
            summary = rounds_summary(recipe, report)
            summary["fingerprint"] = fingerprint
        else:
            summary = asdict(run_recipe(
                recipe,
                input_jsonl=Path(input_dir) / "samples.jsonl",
                dataset_root=Path(input_dir),
                out_dir=Path(out_dir),
                model_root=Path(model_root),
                batch_size=batch_size,
                num_workers=num_workers,
                select=select,
                chunk_size=chunk_size,
                resume_key=resume_key,
            ))
        log_step_report(recipe, Path(input_dir), Path(out_dir), summary)
        mlflow.log_text(Path(recipe_path).read_text(), "recipe.yaml")
        summary["recipe_hash"] = recipe.hash()
        summary["mlflow_run_id"] = mlflow.active_run().info.run_id
    tmp = Path(out_dir) / f"{STEP_RECORD}.partial"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, Path(out_dir) / STEP_RECORD)
    return summary


def rounds_summary(recipe: Recipe, report: RoundsReport) -> dict:
    """A multi-round run as a step summary: ``STEP_COUNTS`` followed per input line, each round's
    ``ROUND_COUNTS``, and every op's counts numbered through the rounds (as ``recipe.ops``)."""
    per_op, offset = [], 0
    for result, spec in zip(report.rounds, recipe.rounds):
        counts = result.step.get("per_op") or [{"op": op.name, **dict.fromkeys(OP_COUNTS, 0)} for op in spec.ops]
        per_op += [{**c, "step": offset + i, "round": spec.name} for i, c in enumerate(counts)]
        offset += len(spec.ops)
    rounds = [{k: v for k, v in asdict(r).items() if k != "step"} for r in report.rounds]
    return {**report.step_counts(), "staged": report.staged, "staging_rejected": report.staging_rejected,
            "rounds": rounds, "per_op": per_op, "recipe_hash": report.recipe_hash}


def _finished_step(out_dir: Path, fingerprint: str) -> dict | None:
    """The summary of a finished run of this step on the same inputs, if the folder holds one."""
    try:
        summary = json.loads((out_dir / STEP_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("fingerprint") == fingerprint and summary.get("mlflow_run_id") else None
