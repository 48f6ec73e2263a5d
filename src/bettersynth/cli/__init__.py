"""The ``bettersynth`` command line: one module per command group, listed in ``main.COMMANDS``."""

from bettersynth.cli.main import main

__all__ = ["main"]
