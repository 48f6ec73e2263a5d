"""The soup step: average finetuned checkpoints (uniform, weighted, greedy, maximum), tracked in MLflow.

Why: a soup is only useful if it is traceable: the step's run records the
ingredients (their runs), their held-out scores, the weights, every greedy
decision (candidate, score of the soup with it, accepted or not) and the soup
checkpoint itself, which is what the Model Registry points at.

Example::

    result = run_soup(paths, run_ids, "greedy", out, evaluate=heldout_evaluator(tvqa_dir, mmb_tsv))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import mlflow

from bettersynth.soup import make_soup
from bettersynth.soup.base import Evaluate
from bettersynth.tracking.outage import log_artifact_folder
from bettersynth.tracking.runs import step_run

SELECTION_METRICS = ("textvqa_accuracy", "mmbench_circular")
NEEDS_SCORES = ("greedy", "maximum")  # methods that rank ingredients on a held-out split


def heldout_score(metrics: dict[str, float]) -> float:
    """The soup's selection score: mean of TextVQA accuracy and MMBench circular accuracy."""
    return sum(metrics[name] for name in SELECTION_METRICS) / len(SELECTION_METRICS)


def heldout_evaluator(textvqa_dir: Path, mmbench_tsv: Path) -> Evaluate:
    """The real eval step's scoring (TextVQA + MMBench CircularEval) on a held-out split, as one number."""
    from bettersynth.steps.evaluate import load_benchmarks, score_checkpoint

    benchmarks = load_benchmarks(Path(textvqa_dir), Path(mmbench_tsv))

    def evaluate(model_dir: Path) -> float:
        return heldout_score(score_checkpoint(Path(model_dir), benchmarks))

    return evaluate


def run_soup(
    ingredients: Sequence[Path],
    ingredient_runs: Sequence[str],
    method: str,
    out_dir: Path,
    evaluate: Evaluate | None = None,
    weights: Sequence[float] | None = None,
    accept_if: str = "ge",
    log_checkpoint: bool = True,
) -> dict:
    """Make the soup inside an MLflow step run and record how it was made.

    ``evaluate`` (a held-out score, higher is better) ranks ingredients and
    greedy candidates and scores the soup; without it only uniform and weighted
    soups can be made, and no scores are logged.
    """
    if len(ingredient_runs) != len(ingredients):
        raise ValueError(f"ingredient_runs: got {len(ingredient_runs)} for {len(ingredients)} ingredients")
    if evaluate is None and method in NEEDS_SCORES:
        raise ValueError(f"heldout: the {method!r} soup needs a held-out split to rank its ingredients")
    runs = [str(r) for r in ingredient_runs]
    params = {"soup.method": method, "soup.accept_if": accept_if, "soup.ingredients": runs}
    if weights is not None:
        params["soup.requested_weights"] = [float(w) for w in weights]
    with step_run(f"soup-{method}", params=params, tags={"soup.method": method}, title=[f"soup {method}"]) as run:
        scores = None if evaluate is None else [float(evaluate(path)) for path in ingredients]
        for index, score in enumerate(scores or []):
            mlflow.log_metric("ingredient_heldout_score", score, step=index)
        result = make_soup(method, list(ingredients), Path(out_dir), scores=scores, weights=weights,
                           evaluate=evaluate, accept_if=accept_if)  # type: ignore[arg-type]
        steps = [{**step, "run": runs[step["index"]]} for step in result.steps]
        for number, step in enumerate(steps):
            mlflow.log_metric("greedy/candidate", step["index"], step=number)
            mlflow.log_metric("greedy/candidate_score", float(step["score"]), step=number)
            mlflow.log_metric("greedy/accepted", float(bool(step["accepted"])), step=number)
        final = result.score
        if final is None and evaluate is not None:
            final = float(evaluate(result.out_dir))
        for index, weight in enumerate(result.weights):
            mlflow.log_metric("ingredient_weight", weight, step=index)
        if final is not None:
            mlflow.log_metric("heldout_score", final)
        mlflow.log_dict({"method": method, "accept_if": accept_if, "ingredients": runs, "ingredient_scores": scores,
                         "weights": result.weights, "steps": steps, "heldout_score": final}, "soup.json")
        model_id = ""
        if log_checkpoint:
            log_artifact_folder(result.out_dir, "checkpoint")
            model_id = _log_model(result.out_dir, method, runs, run.info.run_id)
    return {
        "mlflow_run_id": run.info.run_id,
        "mlflow_model_id": model_id,
        "checkpoint": str(result.out_dir),
        "weights": result.weights,
        "heldout_score": final,
        "ingredient_scores": scores,
        "steps": steps,
    }


def _log_model(path: Path, method: str, ingredient_runs: list[str], run_id: str) -> str:
    """The soup as an MLflow LoggedModel whose source is this run (the registry step lists its version on it)."""
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    model = mlflow.create_external_model(
        name=f"soup-{method}", source_run_id=run_id, model_type=config.get("model_type", "vlm"),
        tags={"soup.method": method, "soup.ingredients": json.dumps(ingredient_runs),
              "checkpoint.artifact": f"runs:/{run_id}/checkpoint"},
    )
    mlflow.set_tag("model.id", model.model_id)
    return model.model_id


def soup_models(
    ingredients: list[Path],
    ingredient_runs: list[str],
    method: str,
    out_dir: Path,
    heldout_textvqa_dir: Path | None,
    heldout_mmbench_tsv: Path | None,
    accept_if: str = "ge",
    weights: Sequence[float] | None = None,
) -> dict:
    """The pipeline's soup: ``run_soup`` scored by the eval step on the held-out split, when one is given."""
    given = [p for p in (heldout_textvqa_dir, heldout_mmbench_tsv) if p]
    if len(given) == 1:
        raise ValueError("heldout: give both heldout_textvqa_dir and heldout_mmbench_tsv, or neither")
    evaluate = heldout_evaluator(heldout_textvqa_dir, heldout_mmbench_tsv) if given else None  # type: ignore[arg-type]
    return run_soup(ingredients, ingredient_runs, method, out_dir, evaluate, weights, accept_if)
