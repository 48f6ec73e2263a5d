"""``bettersynth quickstart``: the whole loop, locally, on a generated demo world."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from bettersynth.reports.summary import format_summary
    from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
    from bettersynth_demo.world import WorldConfig

    config = QuickstartConfig(
        workspace=Path(args.workspace), seeds=args.seeds, arch=args.arch, world=WorldConfig(n_seed_samples=args.samples),
        tracking_uri=args.tracking_uri,
        eval_shards=args.eval_shards,
    )
    summary = run_quickstart(config)
    print("\n" + format_summary(summary, config.registered_model))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("quickstart", help="run the whole loop locally on a generated demo world")
    parser.add_argument("--workspace", default=".", help="DVC project for data, models and MLflow (default: .)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="finetune seeds")
    parser.add_argument("--arch", choices=["llava", "mgm"], default="llava",
                        help="pico base model: LLaVA, or Mini-Gemini with an aux ConvNeXt tower (default: llava)")
    parser.add_argument("--samples", type=int, default=300, help="seed image-caption pairs to generate")
    parser.add_argument("--eval-shards", type=int, default=1, help="split each evaluation into this many tasks")
    parser.add_argument("--tracking-uri", help="MLflow server to log to (default: sqlite mlflow.db in the workspace)")
    parser.set_defaults(run=run)
