"""Peak memory and wall time of a streamed soup vs loading all N checkpoints, vs just reading them.

Why: the soup module promises memory of about one tensor per ingredient (so
under 1.5 x one checkpoint whatever N is) and time close to reading the N
files once (within 1.3 x). This measures both against (a) the naive way
(WePOINTS-style: load N state dicts, average, save) and (b) reading the N
files once, in one run, on random-weight checkpoints of a few hundred MB.

Each measurement runs in a fresh interpreter with the same imports, so its
peak RSS is its own; memory is reported as the peak over the RSS right after
the imports (torch alone is ~0.5 GB), absolute peaks alongside. Files are read
from a warm page cache (they were just written, and read first). Times are
the best of ``--repeats`` runs, peaks the worst.

    python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8 --markdown benchmarks/results/soup.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("read", "streamed", "naive")
MEMORY_TARGET = 1.5  # peak memory over one checkpoint's size, whatever N is
TIME_TARGET = 1.3  # soup time over the time to read the N files once


def make_checkpoints(root: Path, count: int, size_mb: int) -> list[Path]:
    """fp32 random checkpoints of ``size_mb`` MiB: 4 MiB matrices plus an int64 position-ids buffer."""
    import torch
    from safetensors.torch import save_file

    side = 1024
    n_tensors = max(1, size_mb // 4)
    paths = []
    for seed in range(count):
        path = root / f"ckpt_{seed}"
        if not path.exists():
            path.mkdir()
            gen = torch.Generator().manual_seed(seed)
            tensors = {f"layers.{i}.weight": torch.randn(side, side, generator=gen) for i in range(n_tensors)}
            tensors["position_ids"] = torch.arange(4096).unsqueeze(0)
            save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
            (path / "config.json").write_text("{}")
        paths.append(path)
    return paths


def _status_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def run_mode(mode: str, paths: list[Path], out: Path, threads: int) -> None:
    import torch  # imported in every mode so all carry the same footprint
    from safetensors.torch import load_file, save_file

    from bettersynth.soup import average_checkpoints

    torch.set_num_threads(threads)
    base_mb = _status_mb("VmRSS")
    start = time.perf_counter()
    if mode == "streamed":
        average_checkpoints(paths, None, out)
    elif mode == "naive":
        states = [load_file(p / "model.safetensors") for p in paths]
        soup = {}
        for name, first in states[0].items():
            if first.dtype.is_floating_point:
                soup[name] = (sum(s[name].float() for s in states) / len(states)).to(first.dtype)
            else:
                soup[name] = first
        out.mkdir()
        save_file(soup, out / "model.safetensors", metadata={"format": "pt"})
    elif mode == "read":
        buffer = bytearray(64 << 20)
        for p in paths:
            with open(p / "model.safetensors", "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: the latter can carry the parent's peak across fork + exec
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": _status_mb("VmHWM"), "base_mb": base_mb}))


def measure(mode: str, paths: list[Path], out: Path, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--mode", mode, "--threads", str(threads), "--out", str(out),
           "--paths", *map(str, paths)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    shutil.rmtree(out, ignore_errors=True)
    return result


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    return (f"{os.cpu_count()}-core {cpu}, {mem_gb:.0f} GiB RAM, no GPU; Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def table(rows: list[dict], size_mb: int) -> str:
    head = ("| N | read s | streamed s | naive s | **streamed / read** (≤ 1.3) | naive / read "
            "| streamed peak MB | naive peak MB | **streamed peak / ckpt** (≤ 1.5) | naive peak / ckpt "
            "| abs. peak streamed / naive MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        read, streamed, naive = (row[m] for m in MODES)
        grow = {m: row[m]["peak_mb"] - row[m]["base_mb"] for m in MODES}
        lines.append(
            f"| {row['n']} | {read['seconds']:.2f} | {streamed['seconds']:.2f} | {naive['seconds']:.2f} "
            f"| **{streamed['seconds'] / read['seconds']:.2f}** | {naive['seconds'] / read['seconds']:.2f} "
            f"| {grow['streamed']:.0f} | {grow['naive']:.0f} "
            f"| **{grow['streamed'] / size_mb:.3f}** | {grow['naive'] / size_mb:.2f} "
            f"| {streamed['peak_mb']:.0f} / {naive['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="size of each checkpoint (MiB)")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8], help="numbers of ingredients")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode and N (best time, worst peak)")
    parser.add_argument("--workdir", type=Path, default=None, help="where checkpoints go (default: a temp dir)")
    # On a shared box torch's intra-op threads mostly wait on each other: 1 gives steadier numbers.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each run")
    parser.add_argument("--markdown", type=Path, help="also write the table, with the machine, to this file")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.paths, args.out, args.threads)
        return
    load_before = os.getloadavg()[0]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-soup-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for count in args.counts:
            paths = make_checkpoints(root, count, args.size_mb)
            row: dict = {"n": count}
            for mode in MODES:
                runs = [measure(mode, paths, root / f"soup_{mode}_{count}", args.threads) for _ in range(args.repeats)]
                row[mode] = {"seconds": min(r["seconds"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs),
                             "base_mb": min(r["base_mb"] for r in runs)}
            rows.append(row)
            streamed, read = row["streamed"], row["read"]
            grow = streamed["peak_mb"] - streamed["base_mb"]
            print(f"N={count}: streamed/read time {streamed['seconds'] / read['seconds']:.2f} (target ≤ {TIME_TARGET}), "
                  f"streamed peak/ckpt {grow / args.size_mb:.3f} (target ≤ {MEMORY_TARGET}), "
                  f"naive peak/ckpt {(row['naive']['peak_mb'] - row['naive']['base_mb']) / args.size_mb:.2f}",
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    text = table(rows, args.size_mb)
    load = f"1-min load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            f"# Model soups: streamed vs naive\n\n`python benchmarks/bench_soup.py --size-mb {args.size_mb} "
            f"--counts {' '.join(map(str, args.counts))} --repeats {args.repeats} --threads {args.threads}`\n\n"
            f"Machine: {machine()}; {load}.\n\nCheckpoints: {args.size_mb} MiB each, fp32 random weights (4 MiB tensors) "
            "plus an int64 buffer; warm page cache. Peaks are VmHWM minus the RSS after imports (same imports in "
            "every mode); the last column is the absolute VmHWM. Times are the best, peaks the worst, of "
            f"{args.repeats} runs, each in a fresh interpreter.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
