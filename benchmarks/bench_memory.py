"""Peak memory of a data step at 10k and 100k samples: it must not grow with the dataset.

Why: seed sets are 400k-1.2M samples. The runner streams the input in chunks
(``chunk_size`` lines through the whole op list, written out, then the next),
so its peak RSS should be the same at 10k and 100k samples (target: ratio
<= 1.2). This generates a 100k-sample dataset of small PNGs, then runs the
same CPU recipe (words_num, image_size and image_shape filters, which read
image headers, plus the export of every kept image) over its first N lines,
each N in a fresh interpreter with the same imports, and reports the peak
RSS (VmHWM), the RSS right after the imports, and their difference.

``--compare-rev REV`` also runs the runner as it was at git revision REV
(e.g. the last whole-dataset-in-memory version) on the same data.

    python benchmarks/bench_memory.py --sizes 10000 100000 --markdown benchmarks/results/memory.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATIO_TARGET = 1.2  # peak RSS at the largest size over the smallest
RECIPE = {"name": "bench-memory", "use_cache": False, "process": [
    {"words_num_filter": {"min_num": 3}},
    {"image_size_filter": {"min_size": "64B", "max_size": "1MB"}},
    {"image_shape_filter": {"min_width": 8, "min_height": 8}},
]}


def make_dataset(root: Path, n: int) -> None:
    """``n`` samples, one small PNG each (a few distinct encodings, written as bytes: fast)."""
    import numpy as np
    from PIL import Image

    if (root / "samples.jsonl").is_file() and sum(1 for _ in (root / "samples.jsonl").open("rb")) == n:
        return
    rng = np.random.default_rng(0)
    variants = []
    for k in range(64):
        buffer = io.BytesIO()
        size = (8 + k % 9, 8 + k % 7)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
        variants.append(buffer.getvalue())
    words = ["a", "red", "bus", "on", "the", "street", "near", "a", "small", "park", "with", "trees", "and", "people", "walking"]
    with (root / "samples.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(n):
            rel = f"imgs/{i // 1000:03d}/{i:06d}.png"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(variants[i % len(variants)])
            caption = " ".join(words[: 3 + i % 10] + [str(i)])
            handle.write(json.dumps({"id": f"b{i:06d}", "text": f"<__dj__image> {caption} <|__dj__eoc|>", "images": [rel]}) + "\n")


def _vm(field: str) -> int:
    """A /proc/self/status figure, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh interpreter; prints a JSON line."""
    if args.runner_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("runner_under_test", args.runner_file)
        runner = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = runner  # dataclasses look their module up there
        spec.loader.exec_module(runner)
    else:
        from bettersynth.recipes import runner
    from bettersynth.recipes.recipe import Recipe

    recipe = Recipe.from_dict(RECIPE)
    baseline = _vm("VmRSS")
    start = time.perf_counter()
    kwargs = {"chunk_size": args.chunk_size} if "chunk_size" in runner.run_recipe.__code__.co_varnames else {}
    report = runner.run_recipe(recipe, Path(args.input), Path(args.root), Path(args.out), num_workers=0, **kwargs)
    seconds = time.perf_counter() - start
    print(json.dumps({"n_in": report.n_in, "kept": report.kept, "seconds": seconds,
                      "baseline": baseline, "peak": _vm("VmHWM")}))


def measure(root: Path, n: int, work: Path, chunk_size: int, runner_file: str | None) -> dict:
    jsonl = work / f"in-{n}.jsonl"
    with (root / "samples.jsonl").open("rb") as source, jsonl.open("wb") as target:
        for _, line in zip(range(n), source):
            target.write(line)
    out = work / f"out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "--input", str(jsonl), "--root", str(root), "--out", str(out),
           "--chunk-size", str(chunk_size)] + (["--runner-file", runner_file] if runner_file else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"run at {n} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    assert row["n_in"] == n, row
    return row


def _mb(value: int) -> float:
    return value / 2**20


def table(label: str, rows: dict[int, dict]) -> list[str]:
    lines = [f"| {label} | N | s | samples/s | RSS after imports MB | peak RSS MB | peak − imports MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n, r in rows.items():
        lines.append(f"| {label} | {n} | {r['seconds']:.1f} | {n / r['seconds']:.0f} | {_mb(r['baseline']):.0f} | {_mb(r['peak']):.0f} | {_mb(r['peak'] - r['baseline']):.1f} |")
    small, large = rows[min(rows)], rows[max(rows)]
    ratio = large["peak"] / small["peak"]
    growth = (large["peak"] - large["baseline"]) / max(small["peak"] - small["baseline"], 1)
    lines.append("")
    lines.append(f"**{label}: peak RSS {max(rows)} / {min(rows)} = {ratio:.3f}** (target <= {RATIO_TARGET}); "
                 f"over the import baseline: {growth:.2f} x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, help="keep the generated dataset here (default: a temp folder)")
    parser.add_argument("--compare-rev", help="also measure the runner at this git revision")
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--runner-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    root = work / "data"
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    make_dataset(root, max(args.sizes))
    print(f"dataset: {max(args.sizes)} samples under {root} ({time.perf_counter() - started:.0f}s)", flush=True)
    results = {"streaming runner": {n: measure(root, n, work, args.chunk_size, None) for n in args.sizes}}
    if args.compare_rev:
        old = work / "runner_at_rev.py"
        old.write_text(subprocess.run(["git", "show", f"{args.compare_rev}:src/bettersynth/ops/runner.py"], check=True,
                                      capture_output=True, text=True, cwd=Path(__file__).parent).stdout)
        results[f"runner at {args.compare_rev}"] = {n: measure(root, n, work, args.chunk_size, str(old)) for n in args.sizes}
    load = os.getloadavg()
    lines = [f"`python benchmarks/bench_memory.py --sizes {' '.join(map(str, args.sizes))} --chunk-size {args.chunk_size}"
             + (f" --compare-rev {args.compare_rev}`" if args.compare_rev else "`"), "",
             (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"1-min load average {load[0]:.1f} at the end. Each N in a fresh interpreter; decoding workers 0."), ""]
    for label, rows in results.items():
        lines += table(label, rows) + [""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text("# Data step memory: 10k vs 100k samples\n\n" + text)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
