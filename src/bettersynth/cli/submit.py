"""``bettersynth submit``: compile a pipeline for a cluster profile and start a run on a KFP endpoint."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from bettersynth.platform.submit import (
        SubmitSettings,
        compile_package,
        parse_arguments,
        parse_build_options,
        submit,
    )

    host = args.host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise SystemExit("bettersynth submit: --host (or KF_PIPELINES_ENDPOINT) is required")
    arguments = parse_arguments([Path(p) for p in args.params], args.param)
    settings = SubmitSettings(
        host=host, experiment=args.experiment, run_name=args.run_name, namespace=args.namespace,
        service_account=args.service_account, enable_caching=args.caching, ui_host=args.ui_host, token_env=args.token_env,
    )
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(args.output) if args.output else Path(scratch) / f"{args.pipeline}.yaml"
        compile_package(args.pipeline, args.profile, package, args.soup_methods, parse_build_options(args.build))
        result = submit(package, arguments, settings, wait_timeout=args.timeout if args.wait else None)
    print(f"run {result.run_id}: {result.url}")
    if result.state is not None:
        print(f"finished: {result.state}")
        return 0 if result.state.lower() == "succeeded" else 1
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("submit", help="compile a pipeline and submit a run to a KFP endpoint")
    parser.add_argument("--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT)")
    parser.add_argument("--experiment", default="bettersynth", help="KFP experiment name (created if missing)")
    parser.add_argument("--pipeline", default="production", help="folder under pipelines/")
    parser.add_argument("--profile", default="k8s/profiles/generic.yaml", help="cluster profile YAML")
    parser.add_argument("--soup-methods", nargs="+", default=["uniform", "greedy"])
    parser.add_argument("--build", action="append", default=[], metavar="KEY=VALUE",
                        help="compile-time pipeline option, e.g. eval_shards=4 or parallelism=16 (repeatable)")
    parser.add_argument("--params", action="append", default=[], metavar="FILE", help="run parameters YAML (repeatable)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="one run parameter, YAML value (repeatable)")
    parser.add_argument("--run-name")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument("--service-account", help="ServiceAccount the run's pods use")
    parser.add_argument("--caching", action=argparse.BooleanOptionalAction, default=None,
                        help="force caching on/off for every step (default: the compiled policy)")
    parser.add_argument("--ui-host", help="base URL of the KFP UI for the printed link (default: --host)")
    parser.add_argument("--token-env", help="environment variable holding a bearer token for the endpoint")
    parser.add_argument("--output", help="also keep the compiled IR YAML here")
    parser.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded")
    parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait with --wait")
    parser.set_defaults(run=run)
