"""The ``bettersynth`` command line.

Example::

    bettersynth quickstart                      # the whole loop, locally
    bettersynth compile --output loop.yaml      # KFP IR for a cluster
    bettersynth data checkout 3f2a...c1.dir     # bring a dataset variant back

Each command group is a module in this package with ``register(subparsers)``;
adding a command is adding a module and its name to ``COMMANDS``.

Every command runs under one outage policy (``tracking.outage``): MLflow and
the DVC remote get a bounded retry budget (``$BETTERSYNTH_OUTAGE_BUDGET_S``,
default 30 s), then the command ends with one line on stderr naming the
service, its URL, what was kept and how to resume, and exit status 69
(``EX_UNAVAILABLE``); the traceback only with ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

COMMANDS = ["quickstart", "compile", "data", "compare", "algebra", "submit", "soup", "analyze", "proxy", "vlm", "process",
            "trainjob"]
EXIT_UNAVAILABLE = 69  # sysexits' EX_UNAVAILABLE: a service was away; the same command may succeed later


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bettersynth", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bettersynth.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bettersynth.core.retry import ServiceUnavailable
    from bettersynth.tracking.outage import outage_policy

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with outage_policy(kept="every file this command wrote so far",
                           resume=f"rerun `bettersynth {shlex.join(argv)}` once it answers"):
            return args.run(args)
    except ServiceUnavailable as exc:
        if args.verbose:
            raise
        print(f"bettersynth {args.command}: {exc} (-v for the traceback)", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
