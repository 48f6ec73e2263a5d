"""``bettersynth data``: dataset variants under DVC (checkout by hash, lineage log)."""

from __future__ import annotations

import argparse
from pathlib import Path


def checkout(args: argparse.Namespace) -> int:
    from bettersynth.versioning import restore_variant

    path = restore_variant(Path(args.workspace), args.dataset_hash, args.name)
    print(f"restored {args.dataset_hash} into {path}")
    return 0


def history(args: argparse.Namespace) -> int:
    from bettersynth.versioning import list_variants

    for variant in list_variants(Path(args.workspace)):
        print(f"{variant['name']:<24}{variant['dataset_hash']:<40}{variant['meta']}")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset variants under DVC").add_subparsers(dest="data_command", required=True)
    parser = data.add_parser("checkout", help="restore a variant's exact bytes by DVC hash")
    parser.add_argument("dataset_hash")
    parser.add_argument("--name", help="folder name under data/variants when no pointer exists")
    parser.add_argument("--workspace", default=".")
    parser.set_defaults(run=checkout)
    parser = data.add_parser("log", help="list variants and their lineage")
    parser.add_argument("--workspace", default=".")
    parser.set_defaults(run=history)
