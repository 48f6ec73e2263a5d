"""``bettersynth compile``: a pipeline to KFP IR YAML for a cluster profile."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from kfp import compiler

    from bettersynth.pipeline_loader import load_pipeline_module
    from bettersynth.placement import load_profile

    module = load_pipeline_module(args.pipeline)
    pipeline = module.build_pipeline(load_profile(args.profile), tuple(args.soup_methods))
    compiler.Compiler().compile(pipeline, args.output)
    print(f"wrote {args.output} for profile {args.profile}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("compile", help="compile a pipeline to KFP IR YAML")
    parser.add_argument("--pipeline", default="data_centric_loop", help="folder under pipelines/")
    parser.add_argument("--profile", default="k8s/profiles/generic.yaml", help="cluster profile YAML")
    parser.add_argument("--soup-methods", nargs="+", default=["uniform", "greedy"])
    parser.add_argument("--output", default="data_centric_loop.yaml")
    parser.set_defaults(run=run)
