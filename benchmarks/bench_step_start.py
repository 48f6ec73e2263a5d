"""The fixed cost of a pipeline step's process: importing its module, and exiting.

Why: every KFP step (a pod, or a ``kfp.local`` subprocess) is a fresh
interpreter; a proxy recipe runs some 15 of them one after the other, so a
second of start-up or shutdown is 15 s a recipe. Importing ``bettersynth.steps``
registers ``gc.freeze`` to run at exit, which skips Python's last garbage
collections over torch's and transformers' objects. This measures each step
module's import time and its exit time with that handler (as shipped) and
without it (the baseline: the handler unregistered in the same kind of
process), interleaved over ``--rounds`` fresh interpreters (benchmarks/harness.py).

    python benchmarks/bench_step_start.py --rounds 3 --json benchmarks/results/step_start.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import Contender, compare, emit, load_average, run_rounds, write_json

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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--modules", nargs="+", default=list(STEP_MODULES), help="step modules to measure")
    parser.add_argument("--json", type=Path, help="write the ratios here (for harness.py table)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a wrapper that times one grandchild's import and exit
        imported, exited = measure(args.child, args.baseline)
        emit({"import_seconds": imported, "exit_seconds": exited})
        return
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    ratios = []
    for module in args.modules:
        contenders = [Contender(name, [sys.executable, __file__, "--child", module] + (["--baseline"] if base else []))
                      for name, base in (("frozen", False), ("baseline", True))]
        print(module, flush=True)
        results = run_rounds(contenders, args.rounds)
        ratio = compare(results, "frozen", "baseline", "exit_seconds", label=f"exit of {module}")
        ratios.append(ratio)
        imported = statistics.median(r["import_seconds"] for r in results["frozen"])
        print(f"  {ratio.line()}; import {imported:.2f} s (median)", flush=True)
    print(f"load average after: {load_average()}")
    if args.json:
        command = f"python benchmarks/bench_step_start.py --rounds {args.rounds} --modules {' '.join(args.modules)}"
        write_json(args.json, "Step process exit", command, ratios, load_before,
                   "frozen: the gc.freeze exit handler as shipped; baseline: the handler unregistered.")


if __name__ == "__main__":
    main()
