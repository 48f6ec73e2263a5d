"""The one way every benchmark here measures: contenders in fresh processes, interleaved, as ratios.

Why: the machines these run on are shared, so an absolute time says more about
the neighbours than about the code. Each contender runs in its own fresh
interpreter (its peak memory and caches are its own), the contenders take turns
within a round (A B C, A B C, ...), and what is reported is the median over
rounds of the per-round ratio subject / baseline, with its min and max: a
neighbour that slows one round slows both sides of that round's ratio alike.
The load average is printed before and after, so a reader can judge the rest.

A contender is a command whose last stdout line is ``RESULT {json}``; its
script calls :func:`emit` to print it. Scripts write their ratios with
:func:`write_json`; ``python benchmarks/harness.py table results/*.json`` turns
those files into one markdown table.

Example::

    rounds = run_rounds([Contender("read", [...]), Contender("soup", [...])], rounds=3)
    ratio = compare(rounds, "soup", "read", "seconds", "<=", 1.3)
    print(ratio.line())
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MARKER = "RESULT "


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: a name and the command that measures it once."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # replaces the environment when given
    cwd: str | None = None


@dataclass
class Ratio:
    """subject metric / baseline metric, one value per round, and the target it is held to."""

    label: str  # what is compared, e.g. "soup N=4, 256 MiB"
    subject: str
    baseline: str
    metric: str  # the key both contenders reported, e.g. "seconds"
    per_round: list[float]
    target_op: str = ""  # "<=" or ">=", empty for a figure with no target
    target: float | None = None
    note: str = ""
    medians: dict[str, float] = field(default_factory=dict)  # each side's median metric

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.median <= self.target if self.target_op == "<=" else self.median >= self.target

    def line(self) -> str:
        target = "" if self.target is None else f" (target {self.target_op} {self.target}: {'met' if self.met else 'NOT met'})"
        return (f"{self.label}: {self.subject} / {self.baseline} {self.metric} = {self.median:.3f} "
                f"[{min(self.per_round):.3f}-{max(self.per_round):.3f}] over {len(self.per_round)} rounds{target}")


class Clock:
    """Wall and CPU seconds (all threads of this process) of a ``with`` block.

    CPU time is the companion figure for a loaded machine: waiting for a core
    inflates wall time but not CPU time, so a CPU-time ratio shows the work.
    """

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu

    def result(self, **extra: float) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, **extra}


def emit(result: dict) -> None:
    """Print one measurement for the parent (call once, last, in a contender's process)."""
    print(MARKER + json.dumps(result), flush=True)


def run_once(contender: Contender, timeout: float | None = None) -> dict:
    """Run the contender's command in a fresh process and return what it emitted."""
    done = subprocess.run(contender.argv, capture_output=True, text=True, env=contender.env, cwd=contender.cwd,
                          timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"contender {contender.name!r} failed (exit {done.returncode}): "
                           f"{' '.join(contender.argv)}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARKER):])


def run_rounds(contenders: Sequence[Contender], rounds: int, *, before_each: Callable[[Contender], None] | None = None,
               timeout: float | None = None, verbose: bool = True) -> dict[str, list[dict]]:
    """Each contender once per round, in the given order, for ``rounds`` rounds: name -> results by round."""
    if rounds < 1:
        raise ValueError(f"rounds: need at least 1, got {rounds}")
    results: dict[str, list[dict]] = {c.name: [] for c in contenders}
    for number in range(1, rounds + 1):
        for contender in contenders:
            if before_each is not None:
                before_each(contender)
            results[contender.name].append(run_once(contender, timeout))
        if verbose:
            print(f"  round {number}/{rounds}: " + ", ".join(
                f"{name} {_short(runs[-1])}" for name, runs in results.items()), flush=True)
    return results


def _short(result: dict) -> str:
    keys = [k for k in ("seconds", "cpu_seconds", "samples_per_s", "peak_mb", "exit_seconds") if k in result]
    return " ".join(f"{k}={result[k]:.3g}" for k in keys)


def compare(results: dict[str, list[dict]], subject: str, baseline: str, metric: str, target_op: str = "",
            target: float | None = None, label: str = "", note: str = "") -> Ratio:
    """The per-round ratios subject / baseline of ``metric`` (rounds paired by position)."""
    if target_op not in ("", "<=", ">="):
        raise ValueError(f"target_op: must be '<=' or '>=', got {target_op!r}")
    pairs = zip(results[subject], results[baseline], strict=True)
    per_round = [s[metric] / b[metric] for s, b in pairs]
    medians = {name: statistics.median(r[metric] for r in results[name]) for name in (subject, baseline)}
    return Ratio(label or subject, subject, baseline, metric, per_round, target_op, target, note, medians)


def peak_memory_ratios(results: dict[str, list[dict]], large: str, small: str, target: float, label: str) -> list[Ratio]:
    """Peak RSS at the largest size over the smallest (held to ``target``), and the same over the imports."""
    return [compare(results, large, small, "peak_mb", "<=", target, f"{label} peak RSS"),
            compare(results, large, small, "grow_mb", label=f"{label} peak RSS over imports")]


def add_common_arguments(parser: argparse.ArgumentParser, workdir_help: str) -> None:
    """``--rounds``, ``--workdir`` and ``--json``, as every benchmark here takes them."""
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workdir", type=Path, help=workdir_help)
    parser.add_argument("--json", type=Path, help="write the ratios here (for harness.py table)")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    """CPU, cores, memory, OS and Python, for the header of every result."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores {cpu}, {mem_gib:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def status_mb(field_name: str) -> float:
    """A /proc/self/status figure (VmRSS, VmHWM) in MiB: VmHWM, unlike ru_maxrss, is this process's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field_name)


def write_json(path: Path, title: str, command: str, ratios: list[Ratio], load_before: str, notes: str = "") -> None:
    """One benchmark's ratios, with its command, machine and loads, for the combined table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"title": title, "command": command, "machine": machine(), "load_before": load_before,
            "load_after": load_average(), "notes": notes,
            "ratios": [asdict(r) | {"median": r.median, "met": r.met} for r in ratios]}
    path.write_text(json.dumps(data, indent=1) + "\n")


def markdown(files: Sequence[Path]) -> str:
    """One table over every benchmark's JSON file, then each one's command and loads."""
    sections = [json.loads(Path(f).read_text()) for f in files]
    lines = ["| benchmark | comparison | metric | median ratio | min-max | rounds | target | met |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for section in sections:
        for r in section["ratios"]:
            target = f"{r['target_op']} {r['target']}" if r["target"] is not None else "-"
            met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
            lines.append(f"| {r['label']} | {r['subject']} / {r['baseline']} | {r['metric']} | {r['median']:.3f} "
                         f"| {min(r['per_round']):.3f}-{max(r['per_round']):.3f} | {len(r['per_round'])} "
                         f"| {target} | {met} |")
    lines.append("")
    for section in sections:
        lines += [f"- **{section['title']}**: `{section['command']}`; load average (1, 5, 15 min) "
                  f"{section['load_before']} before, {section['load_after']} after; {section['machine']}."
                  + (f" {section['notes']}" if section["notes"] else "")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Combine benchmark result files into one markdown table.")
    sub = parser.add_subparsers(dest="verb", required=True)
    table = sub.add_parser("table", help="print (or write) the table over the given JSON result files")
    table.add_argument("files", nargs="+", type=Path)
    table.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args()
    text = markdown(args.files)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
