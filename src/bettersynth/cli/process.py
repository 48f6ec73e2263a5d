"""``bettersynth process --config recipe.yaml``: run a Data-Juicer recipe as ``dj-process`` does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from bettersynth.steps.dj_process import process_config

    report = process_config(
        Path(args.config), model_root=Path(args.model_root) if args.model_root else None, version=args.version,
        workspace=Path(args.workspace), tracking_uri=args.tracking_uri, only_keep_caption=args.only_keep_caption,
        batch_size=args.batch_size, decode=args.decode,
    )
    print(f"{args.config}: {report['n_in']} read, {report['kept']} kept ({report['kept_from_input']} of them inputs), "
          f"{report['filtered']} filtered, {report['rejected']} rejected")
    for name, path in report["files"].items():
        print(f"  {name}: {json.dumps(path) if isinstance(path, list) else path}")
    if "version" in report:
        print(f"versioned {args.version}: {report['version']['dataset_hash']}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "process", help="run a Data-Juicer recipe as dj-process does: dataset_path in, export_path out",
        description="Run a Data-Juicer recipe unchanged: reads its dataset_path (Data-Juicer jsonl, LLaVA json or a "
                    "folder), writes the kept samples to export_path in Data-Juicer's format, and beside it "
                    "<name>_stats.jsonl, <name>_rejected.jsonl, <name>_filtered.jsonl, <name>_report.json and the "
                    "variant folder <name>_variant/.",
    )
    parser.add_argument("--config", required=True, help="the Data-Juicer recipe (YAML)")
    parser.add_argument("--model-root", help="folder the recipe's model names are relative to (only for ops that load a model; "
                                             "default: the working folder)")
    parser.add_argument("--version", metavar="NAME", help="also version the result as data/variants/NAME with DVC, with its lineage")
    parser.add_argument("--workspace", default=".", help="the DVC project for --version")
    parser.add_argument("--tracking-uri", help="MLflow store for --version (default: $MLFLOW_TRACKING_URI, else <workspace>/mlflow.db)")
    parser.add_argument("--only-keep-caption", action="store_true",
                        help="read LLaVA records as caption samples (llava_to_dj's only_keep_caption)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode", choices=["cpu", "device", "auto"], default="cpu",
                        help="where model ops decode JPEGs: cpu (PIL in the workers), device (batches on the GPU, "
                             "nvjpeg), auto (device when the model runs on CUDA)")
    parser.set_defaults(run=run)
