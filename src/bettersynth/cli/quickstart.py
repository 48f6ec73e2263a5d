"""``bettersynth quickstart``: the whole loop, locally, on a generated world.

By default two recipes (no filter, similarity) through the same pipeline in a small proxy world
with trained models, ending with every model beside the trivial baselines and a champion that
won by a margin. ``--pico`` runs one recipe on random-weight pico models instead: the plumbing
in a few minutes, scores meaningless.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    return run_pico(args) if args.pico else run_proxy_world(args)


def run_proxy_world(args: argparse.Namespace) -> int:
    from bettersynth.reports.summary import look_further_commands
    from bettersynth.tracking.outage import outage_policy, require_tracking_server
    from bettersynth_demo.proxy.experiment import run_proxy
    from bettersynth_demo.proxy.quickstart import champion_report, format_quickstart, quickstart_config

    started = time.monotonic()
    config = quickstart_config(Path(args.workspace), args.seeds, args.tracking_uri, args.arch)
    with outage_policy(kept=f"everything already under the workspace {config.workspace.resolve()}"):
        if args.tracking_uri:
            require_tracking_server(args.tracking_uri)  # before the world and its models: seconds, not minutes
        result = run_proxy(config)
        table = format_quickstart(result, champion_report(result, config.registered_model))
        import mlflow

        experiment = mlflow.get_experiment_by_name(config.experiment).experiment_id
    workspace = config.workspace.resolve()
    look = look_further_commands(workspace, args.tracking_uri, experiment, [row.dataset_hash for row in result["rows"]],
                                 experiment=config.experiment)
    print(f"\nbettersynth quickstart: {len(config.recipes)} recipes x {len(config.seeds)} seeds in the proxy world "
          f"({workspace}), {time.monotonic() - started:.0f} s\n\n{table}\n")
    print("prepare: " + ", ".join(f"{k} {v:.0f}s" for k, v in result["timings"].items()))
    print("recipes: " + ", ".join(f"{row.recipe} {row.seconds:.0f}s" for row in result["rows"]))
    print("\nLook further:\n" + "\n".join(look))
    return 0


def run_pico(args: argparse.Namespace) -> int:
    from bettersynth.reports.summary import format_summary
    from bettersynth.tracking.outage import outage_policy
    from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
    from bettersynth_demo.world import WorldConfig

    config = QuickstartConfig(
        workspace=Path(args.workspace), seeds=args.seeds, arch=args.arch, world=WorldConfig(n_seed_samples=args.samples),
        tracking_uri=args.tracking_uri,
        eval_shards=args.eval_shards,
    )
    kept = f"everything already under the workspace {config.workspace.resolve()}"
    with outage_policy(kept=kept):
        summary = run_quickstart(config)
    print("\n" + format_summary(summary, config.registered_model))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("quickstart", help="run the whole loop locally on a generated demo world")
    parser.add_argument("--workspace", default=".", help="DVC project for data, models and MLflow (default: .)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="finetune seeds (per recipe)")
    parser.add_argument("--arch", choices=["llava", "mgm"], default="llava",
                        help="base model: LLaVA, or Mini-Gemini with an aux ConvNeXt tower (default: llava)")
    parser.add_argument("--pico", action="store_true",
                        help="one recipe on random-weight pico models (the plumbing only, scores meaningless) "
                             "instead of two recipes with trained models in a small proxy world")
    parser.add_argument("--samples", type=int, default=300, help="pico loop: seed image-caption pairs to generate")
    parser.add_argument("--eval-shards", type=int, default=1, help="pico loop: split each evaluation into this many tasks")
    parser.add_argument("--tracking-uri", help="MLflow server to log to (default: sqlite mlflow.db in the workspace)")
    parser.set_defaults(run=run)
