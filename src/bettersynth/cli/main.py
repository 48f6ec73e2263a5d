"""The ``bettersynth`` command line.

Example::

    bettersynth quickstart                      # the whole loop, locally
    bettersynth compile --output loop.yaml      # KFP IR for a cluster
    bettersynth data checkout 3f2a...c1.dir     # bring a dataset variant back

Each command group is a module in this package with ``register(subparsers)``;
adding a command is adding a module and its name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ["quickstart", "compile", "data", "compare", "algebra", "submit", "soup", "analyze", "proxy", "vlm", "process",
            "trainjob"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bettersynth", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bettersynth.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
