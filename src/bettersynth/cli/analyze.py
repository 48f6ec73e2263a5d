"""``bettersynth analyze``: a recipe's filter stats over a dataset, without filtering."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import mlflow

    from bettersynth.recipes.recipe import Recipe
    from bettersynth.reports.analyze import analyze_recipe

    if not args.recipe:
        raise SystemExit("analyze: a recipe YAML is required, e.g. bettersynth analyze recipe.yaml --input data.jsonl")
    recipe = Recipe.load(args.recipe)
    input_jsonl = Path(args.input or recipe.extra.get("dataset_path") or "")
    if not input_jsonl.is_file():
        raise SystemExit(f"analyze: input jsonl {str(input_jsonl)!r} not found (pass --input or set dataset_path in the recipe)")
    kwargs = dict(
        recipe=recipe, input_jsonl=input_jsonl, dataset_root=Path(args.dataset_root or input_jsonl.parent),
        out_dir=Path(args.out), model_root=Path(args.model_root) if args.model_root else None,
        batch_size=args.batch_size, num_workers=args.num_workers, k_sigma=args.k_sigma,
    )
    if args.mlflow or os.environ.get("MLFLOW_RUN_ID"):  # start_run() joins a KFP-injected run
        with mlflow.start_run(run_name=f"analyze-{recipe.name or Path(args.recipe).stem}"):
            result = analyze_recipe(**kwargs)
    else:
        result = analyze_recipe(**kwargs)
    print((result.out_dir / "stats.md").read_text(), end="")
    print(f"wrote {result.out_dir}/stats.csv, stats.md and {len(result.histograms)} histogram(s)")
    if result.auto_recipe:
        print(f"wrote {result.auto_recipe}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="stats of a recipe's filters, without filtering (like dj-analyze)")
    parser.add_argument("recipe", nargs="?", help="recipe YAML (Data-Juicer style)")
    parser.add_argument("--input", help="Data-Juicer jsonl (default: the recipe's dataset_path)")
    parser.add_argument("--dataset-root", help="folder image paths are relative to (default: the jsonl's folder)")
    parser.add_argument("--out", default="analysis", help="output folder")
    parser.add_argument("--model-root", help="folder model names resolve against")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="decoding workers (default: from the core count)")
    parser.add_argument("--k-sigma", type=float, default=None, help="also write auto_recipe.yaml with min/max = mean -/+ k*std")
    parser.add_argument("--mlflow", action="store_true", help="log into a new MLflow run (an active or KFP-injected run is always used)")
    parser.set_defaults(run=run)
