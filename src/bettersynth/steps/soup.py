"""The soup step: average finetuned checkpoints (uniform, greedy, maximum, weighted)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from bettersynth.soup import make_soup
from bettersynth.steps.evaluate import load_benchmarks, score_checkpoint
from bettersynth.tracking import step_run

SELECTION_METRICS = ("textvqa_accuracy", "mmbench_circular")


def heldout_score(metrics: dict[str, float]) -> float:
    """The soup's selection score: mean of TextVQA accuracy and MMBench circular accuracy."""
    return sum(metrics[name] for name in SELECTION_METRICS) / len(SELECTION_METRICS)


def soup_models(
    ingredients: list[Path],
    ingredient_runs: list[str],
    method: str,
    out_dir: Path,
    heldout_textvqa_dir: Path,
    heldout_mmbench_tsv: Path,
    accept_if: str = "ge",
) -> dict:
    """Make a soup of ``ingredients``; greedy steps and held-out scores are logged to MLflow."""
    benchmarks = load_benchmarks(heldout_textvqa_dir, heldout_mmbench_tsv)

    def evaluate(model_dir: Path) -> float:
        return heldout_score(score_checkpoint(model_dir, benchmarks))

    params = {"soup.method": method, "soup.accept_if": accept_if, "soup.ingredients": ingredient_runs}
    with step_run(f"soup-{method}", params=params, tags={"soup.method": method}) as run:
        scores = [evaluate(path) for path in ingredients]
        for index, score in enumerate(scores):
            mlflow.log_metric("ingredient_heldout_score", score, step=index)
        result = make_soup(method, list(ingredients), Path(out_dir), scores=scores, evaluate=evaluate, accept_if=accept_if)
        for index, step in enumerate(result.steps):
            mlflow.log_metric("greedy/candidate_score", float(step["score"]), step=index)
            mlflow.log_metric("greedy/accepted", float(bool(step["accepted"])), step=index)
        mlflow.log_dict({"steps": result.steps, "weights": result.weights, "ingredients": ingredient_runs}, "soup.json")
        final = result.score if result.score is not None else evaluate(result.out_dir)
        mlflow.log_metric("heldout_score", final)
        mlflow.log_artifacts(str(result.out_dir), artifact_path="checkpoint")
    return {
        "mlflow_run_id": run.info.run_id,
        "checkpoint": str(result.out_dir),
        "weights": result.weights,
        "heldout_score": final,
        "ingredient_scores": scores,
    }
