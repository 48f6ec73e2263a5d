"""The ``bettersynth`` command line.

Example::

    bettersynth quickstart                      # the whole loop, locally
    bettersynth compile --output loop.yaml      # KFP IR for a cluster
    bettersynth data checkout 3f2a...c1.dir     # bring a dataset variant back
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    from bettersynth.demo.world import WorldConfig
    from bettersynth.quickstart import QuickstartConfig, run_quickstart
    from bettersynth.summary import format_summary

    config = QuickstartConfig(
        workspace=Path(args.workspace), seeds=args.seeds, world=WorldConfig(n_seed_samples=args.samples)
    )
    summary = run_quickstart(config)
    print(format_summary(summary, config.registered_model))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from kfp import compiler

    from bettersynth.pipeline_loader import load_pipeline_module
    from bettersynth.placement import load_profile

    module = load_pipeline_module(args.pipeline)
    pipeline = module.build_pipeline(load_profile(args.profile), tuple(args.soup_methods))
    compiler.Compiler().compile(pipeline, args.output)
    print(f"wrote {args.output} for profile {args.profile}")
    return 0


def _data_checkout(args: argparse.Namespace) -> int:
    from bettersynth.versioning import restore_variant

    path = restore_variant(Path(args.workspace), args.dataset_hash, args.name)
    print(f"restored {args.dataset_hash} into {path}")
    return 0


def _data_log(args: argparse.Namespace) -> int:
    from bettersynth.versioning import list_variants

    for variant in list_variants(Path(args.workspace)):
        print(f"{variant['name']:<24}{variant['dataset_hash']:<40}{variant['meta']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bettersynth", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser("quickstart", help="run the whole loop locally on a generated demo world")
    quick.add_argument("--workspace", default=".", help="DVC project for data, models and MLflow (default: .)")
    quick.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="finetune seeds")
    quick.add_argument("--samples", type=int, default=300, help="seed image-caption pairs to generate")
    quick.set_defaults(run=_quickstart)

    comp = commands.add_parser("compile", help="compile a pipeline to KFP IR YAML")
    comp.add_argument("--pipeline", default="data_centric_loop")
    comp.add_argument("--profile", default="k8s/profiles/generic.yaml", help="cluster profile YAML")
    comp.add_argument("--soup-methods", nargs="+", default=["uniform", "greedy"])
    comp.add_argument("--output", default="data_centric_loop.yaml")
    comp.set_defaults(run=_compile)

    data = commands.add_parser("data", help="dataset variants under DVC").add_subparsers(dest="data_command", required=True)
    checkout = data.add_parser("checkout", help="restore a variant's exact bytes by DVC hash")
    checkout.add_argument("dataset_hash")
    checkout.add_argument("--name", help="folder name under data/variants when no pointer exists")
    checkout.add_argument("--workspace", default=".")
    checkout.set_defaults(run=_data_checkout)
    history = data.add_parser("log", help="list variants and their lineage")
    history.add_argument("--workspace", default=".")
    history.set_defaults(run=_data_log)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
