"""``bettersynth soup``: average checkpoints given as paths, MLflow run ids or registered versions.

Example::

    bettersynth soup 3f2a...c1 9b0d...7e vlm@candidate --method greedy --out soups/greedy \\
        --heldout-textvqa-dir heldout/textvqa --heldout-mmbench-tsv heldout/mmbench/mmbench_dev.tsv \\
        --register vlm --textvqa-dir eval/textvqa --mmbench-tsv eval/mmbench/mmbench_dev.tsv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

DEFAULT_EXPERIMENT = "bettersynth-soups"  # where soup runs go when neither --experiment nor $MLFLOW_EXPERIMENT_ID says


def run(args: argparse.Namespace) -> int:
    if not args.ingredients:
        args.parser.error("give at least one ingredient")
    if args.out is None:
        args.parser.error("--out is required")
    if bool(args.heldout_textvqa_dir) != bool(args.heldout_mmbench_tsv):
        args.parser.error("give both --heldout-textvqa-dir and --heldout-mmbench-tsv, or neither")
    if args.register and not (args.textvqa_dir and args.mmbench_tsv):
        args.parser.error("--register needs --textvqa-dir and --mmbench-tsv to score the soup")

    import os

    import mlflow

    from bettersynth.soup.ingredients import resolve_ingredients
    from bettersynth.steps.soup import heldout_evaluator, run_soup
    from bettersynth.tracking.runs import ensure_experiment

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.experiment or not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        os.environ["MLFLOW_EXPERIMENT_ID"] = ensure_experiment(args.experiment or DEFAULT_EXPERIMENT)
    with tempfile.TemporaryDirectory(prefix="bettersynth-soup-") as scratch:
        ingredients = resolve_ingredients(args.ingredients, Path(scratch) / "downloads")
        evaluate = None
        if args.heldout_textvqa_dir:
            evaluate = heldout_evaluator(Path(args.heldout_textvqa_dir), Path(args.heldout_mmbench_tsv))
        lineage = [i.lineage for i in ingredients]
        result = run_soup(
            [i.path for i in ingredients], lineage, args.method, Path(args.out), evaluate,
            args.weights, args.accept_if, log_checkpoint=bool(args.register),
        )
        print(f"soup ({args.method}) written to {result['checkpoint']}; MLflow run {result['mlflow_run_id']}")
        scores = result["ingredient_scores"] or [None] * len(ingredients)
        for ingredient, weight, score in zip(ingredients, result["weights"], scores):
            shown = "" if score is None else f"  held-out {score:.4f}"
            print(f"  {weight:6.3f}  {ingredient.lineage}{shown}")
        if args.register:
            _register(args, result, lineage, Path(scratch) / "eval")
    return 0


def _register(args: argparse.Namespace, result: dict, lineage: list[str], eval_dir: Path) -> None:
    from bettersynth.steps.evaluate import evaluate_model
    from bettersynth.steps.register import promote_version, register_version, soup_tags

    scored = evaluate_model(Path(result["checkpoint"]), Path(args.textvqa_dir), Path(args.mmbench_tsv), eval_dir,
                            f"soup-{args.method}")
    tags = soup_tags(args.method, lineage, result["ingredient_scores"], result["weights"])
    version = register_version(args.register, result["mlflow_run_id"], scored["metrics"], tags)
    promoted = promote_version(args.register, version, args.metric)
    state = "moved to it" if promoted["champion_moved"] else f"stays on version {promoted['champion']}"
    print(f"registered {args.register} version {version} ({args.metric}); champion {state}")


def register(subparsers) -> None:
    parser = subparsers.add_parser("soup", help="average finetuned checkpoints (uniform, weighted, greedy, maximum)")
    parser.add_argument("ingredients", nargs="*",
                        help="checkpoint dirs, MLflow run ids, runs:/<run>/<path>, models:/<name>/<version> or <name>@<alias>")
    parser.add_argument("--method", default="uniform", help="uniform, weighted, greedy or maximum (default: uniform)")
    parser.add_argument("--out", help="output checkpoint directory (must be missing or empty)")
    parser.add_argument("--weights", type=float, nargs="+", help="one per ingredient, for --method weighted")
    parser.add_argument("--accept-if", choices=["ge", "gt"], default="ge",
                        help="greedy: keep a candidate if the score is >= (paper) or > (reference code)")
    parser.add_argument("--heldout-textvqa-dir", help="held-out TextVQA split that ranks ingredients (greedy, maximum)")
    parser.add_argument("--heldout-mmbench-tsv", help="held-out MMBench TSV, likewise")
    parser.add_argument("--register", metavar="NAME", help="register the soup under this model name")
    parser.add_argument("--textvqa-dir", help="TextVQA split that scores the soup for registration")
    parser.add_argument("--mmbench-tsv", help="MMBench TSV that scores the soup for registration")
    parser.add_argument("--metric", default="score", help="what champion must be beaten on (default: score)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_ID, else {DEFAULT_EXPERIMENT})")
    parser.set_defaults(run=run, parser=parser)
