"""``bettersynth trainjob``: the Kubernetes objects a multi-node train step submits, as YAML for review."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import yaml

    from bettersynth.steps.train_remote import review_objects

    objects = review_objects(Path(args.train_config), Path(args.profile) if args.profile else None, args.stage, args.seed,
                             args.namespace)
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "trainjob", help="print the TrainJob (or PyTorchJob) and the runtime a multi-node train step submits",
        description="Prints, as YAML, what `bettersynth.train.launch` submits for one stage of a train config with a "
                    "`multinode:` section: the job, and for a TrainJob the ClusterTrainingRuntime it refers to. "
                    "Apply the runtime once (`kubectl apply -k k8s/runtimes`); the job's name digests a run's "
                    "inputs, so a pipeline's differs from this one.")
    parser.add_argument("--train-config", required=True, help="train YAML with a multinode: section")
    parser.add_argument("--profile", help="cluster profile YAML (default: the config's multinode.profile)")
    parser.add_argument("--stage", choices=["align", "finetune"], default="align")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--namespace", default="bettersynth",
                        help="namespace of the job when the config names none (a pipeline step uses its own)")
    parser.set_defaults(run=run)
