"""``bettersynth proxy``: the recipe comparison in the proxy world, offline on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def write_world_only(workspace: Path) -> int:
    """Write the proxy world alone and say whether any benchmark image shows a trained image's pixels."""
    from bettersynth_demo.leakage import benchmark_images, shared_pixels
    from bettersynth_demo.proxy.config import WORLD_DIR
    from bettersynth_demo.proxy.world import ProxyWorldConfig, build_proxy_world

    paths = build_proxy_world(workspace.resolve() / WORLD_DIR, ProxyWorldConfig())
    images = benchmark_images(paths.world)
    shared = shared_pixels(images, paths.training_images())
    print(f"proxy world written to {paths.root} (scenes of every split but the seed's: {paths.world.scene_index})")
    for split, found in images.items():
        print(f"{split}: {len(found)} images, {len(shared[split])} with the pixels of a training image"
              + "".join(f"\n  {name} ({source})" for name, source in shared[split]))
    return 1 if any(shared.values()) else 0


def run(args: argparse.Namespace) -> int:
    if args.world_only:
        return write_world_only(Path(args.workspace))
    import torch

    from bettersynth.tracking.outage import outage_policy, require_tracking_server
    from bettersynth_demo.proxy.config import SEEDS, ProxyConfig, ProxyModels
    from bettersynth_demo.proxy.experiment import format_table, run_proxy

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    config = ProxyConfig(workspace=Path(args.workspace), seeds=args.seeds or list(SEEDS), recipes=tuple(args.recipes),
                         soup_methods=tuple(args.soup_methods), tracking_uri=args.tracking_uri, arch=args.arch)
    models = ProxyModels.load(config.workspace) if args.reuse_models else None
    if models is not None and models.world.load_config() != config.world:
        models = None  # built for another world: train again
    if args.tracking_uri:
        require_tracking_server(args.tracking_uri)  # before training the proxy's models: seconds, not minutes
    with outage_policy(kept=f"everything already under the workspace {config.workspace.resolve()}"):
        result = run_proxy(config, models)
    print("\n" + format_table(result) + "\n")
    print("prepare: " + ", ".join(f"{k} {v:.0f}s" for k, v in result["timings"].items())
          + (" (reused)" if models is not None else ""))
    print("recipes: " + ", ".join(f"{row.recipe} {row.seconds:.0f}s" for row in result["rows"]))
    print(f"total wall time: {time.monotonic() - started:.0f}s")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("proxy", help="compare shipped recipes in the proxy world (trained models, CPU)")
    parser.add_argument("--workspace", default="proxy", help="DVC project for the proxy world, models and MLflow")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="independent seeds per recipe, each its own stage 1 and stage 2, paired across recipes "
                             "(default: 0 1 2 3 4)")
    parser.add_argument("--recipes", nargs="+", default=["no-filter", "similarity", "similarity-recaption"])
    parser.add_argument("--soup-methods", nargs="+", default=["greedy"], choices=["uniform", "greedy", "maximum"],
                        help="one soup of each recipe's seeds per method (each adds about 35 s a recipe)")
    parser.add_argument("--arch", choices=["llava", "mgm"], default="llava",
                        help="base VLM the recipes train: LLaVA, or Mini-Gemini with a ConvNeXt aux tower")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in this process (0: torch default)")
    parser.add_argument("--reuse-models", action="store_true",
                        help="skip building the world and training its models when this workspace has them")
    parser.add_argument("--tracking-uri", help="MLflow server (default: sqlite mlflow.db in the workspace)")
    parser.add_argument("--world-only", action="store_true",
                        help="write the proxy world alone (seconds) and check its benchmarks against its training images")
    parser.set_defaults(run=run)
