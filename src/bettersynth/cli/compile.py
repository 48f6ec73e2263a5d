"""``bettersynth compile``: a pipeline to KFP IR YAML for a cluster profile."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from bettersynth.platform.submit import compile_package, parse_build_options

    compile_package(args.pipeline, args.profile, Path(args.output), args.soup_methods, parse_build_options(args.build))
    print(f"wrote {args.output} for profile {args.profile}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("compile", help="compile a pipeline to KFP IR YAML")
    parser.add_argument("--pipeline", default="data_centric_loop", help="folder under pipelines/")
    parser.add_argument("--profile", default="k8s/profiles/generic.yaml", help="cluster profile YAML")
    parser.add_argument("--soup-methods", nargs="+", default=["uniform", "greedy"])
    parser.add_argument("--build", action="append", default=[], metavar="KEY=VALUE",
                        help="compile-time pipeline option, e.g. eval_shards=4 or parallelism=16 (repeatable)")
    parser.add_argument("--output", default="data_centric_loop.yaml")
    parser.set_defaults(run=run)
