"""The fixed cost of a pipeline step's process: importing its module, and exiting.

Why: every KFP step (a pod, or a ``kfp.local`` subprocess) is a fresh
interpreter; a proxy recipe runs some 15 of them one after the other, so a
second of start-up or shutdown is 15 s a recipe. Importing ``bettersynth.steps``
registers ``gc.freeze`` to run at exit, which skips Python's last garbage
collections over torch's and transformers' objects. This measures each step
module's import time and its exit time with that handler (as shipped) and
without it (the baseline: the handler unregistered in the same kind of
process), best of ``--repeats`` fresh interpreters each.

    python benchmarks/bench_step_start.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

STEP_MODULES = ("bettersynth.steps.process", "bettersynth.steps.train", "bettersynth.steps.evaluate",
                "bettersynth.steps.soup", "bettersynth.steps.register", "bettersynth.steps.version")

CHILD = """
import atexit, gc, sys, time
started = time.perf_counter()
import {module}
imported = time.perf_counter() - started
if {baseline}:
    atexit.unregister(gc.freeze)
print(imported, time.time(), flush=True)
"""


def measure(module: str, baseline: bool) -> tuple[float, float]:
    """(import seconds, exit seconds) of one fresh interpreter that imports ``module`` and ends."""
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(module=module, baseline=baseline)],
                             stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    child.wait()
    ended = time.time()
    if child.returncode != 0:
        raise RuntimeError(f"{module}: the child process failed (exit {child.returncode})")
    imported, exiting_at = map(float, line.split())
    return imported, ended - exiting_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'step module':<28}{'import s':>10}{'exit s (baseline)':>19}{'exit s (frozen)':>17}{'exit ratio':>12}")
    for module in STEP_MODULES:
        runs = {baseline: [measure(module, baseline) for _ in range(args.repeats)] for baseline in (True, False)}
        imported = min(i for i, _ in runs[False])
        base, frozen = (min(e for _, e in runs[b]) for b in (True, False))
        print(f"{module:<28}{imported:>10.2f}{base:>19.2f}{frozen:>17.2f}{frozen / base:>12.2f}")


if __name__ == "__main__":
    main()
