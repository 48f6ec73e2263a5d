"""``bettersynth compare``: models across pipeline runs, with the data that made them."""

from __future__ import annotations

import argparse
from pathlib import Path

SORT_KEYS = ("textvqa", "mmbench_circular", "score", "kept")  # bettersynth.reports.compare.SORT_KEYS, kept import-free for a fast CLI


def run(args: argparse.Namespace) -> int:
    import mlflow

    from bettersynth.reports.compare import collect_rows, format_table, sort_rows, write_chart
    from bettersynth.tracking.runs import cli_tracking_uri

    mlflow.set_tracking_uri(cli_tracking_uri(Path(args.workspace), args.tracking_uri))
    rows = sort_rows(collect_rows(args.experiment), args.sort_by)
    if not rows:
        print("no trained or souped models found")
        return 1
    print(format_table(rows))
    if args.chart:
        metric = "score" if args.sort_by == "kept" else args.sort_by
        print(f"chart: {write_chart(rows, Path(args.chart), metric)}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="compare models across runs: recipe, kept samples, dataset hash, scores")
    parser.add_argument("--experiment", action="append", help="MLflow experiment name (repeatable; default: all)")
    parser.add_argument("--sort-by", default="score", choices=SORT_KEYS, help="best first by this column (score = mean of both benchmarks)")
    parser.add_argument("--chart", help="write a PNG of the score against kept samples per recipe here")
    parser.add_argument("--workspace", default=".", help="where the quickstart's mlflow.db lives")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else <workspace>/mlflow.db)")
    parser.set_defaults(run=run)
