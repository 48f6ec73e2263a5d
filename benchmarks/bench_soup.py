"""Streamed soup vs a running-sum soup vs just reading the ingredient files: time and peak memory.

Why: the soup promises time close to reading the N files once (target <= 1.3x),
no slower than the obvious competent implementation (a running sum: load one
state dict at a time with safetensors, add it into a float32 accumulator,
divide, save; target <= 1.0x), and peak memory under 1.5x one checkpoint
whatever N is. Contenders, each in a fresh interpreter with the same imports,
interleaved over ``--rounds`` rounds (benchmarks/harness.py):

1. ``read``: read every ingredient file once into a 64 MiB buffer (the floor);
2. ``running_sum``: the baseline above;
3. ``streamed``: ``bettersynth.soup.average_checkpoints`` (uniform weights).

Checkpoints are fp32 random weights (4 MiB matrices plus an int64 buffer) in a
temp folder, deleted at the end; files are read from a warm page cache. Memory is
VmHWM minus the RSS after the imports, over one checkpoint's size.

    python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8 --rounds 3 --json benchmarks/results/soup.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness import Clock, Contender, compare, emit, load_average, run_rounds, status_mb, write_json

MODES = ("read", "running_sum", "streamed")
TIME_VS_READ = 1.3
TIME_VS_RUNNING_SUM = 1.0
MEMORY_TARGET = 1.5  # peak over imports, over one checkpoint's size


def make_checkpoints(root: Path, count: int, size_mb: int) -> list[Path]:
    """fp32 random checkpoints of ``size_mb`` MiB: 4 MiB matrices plus an int64 position-ids buffer."""
    import torch
    from safetensors.torch import save_file

    paths = []
    for seed in range(count):
        path = root / f"ckpt_{seed}"
        if not path.exists():
            path.mkdir(parents=True)
            gen = torch.Generator().manual_seed(seed)
            tensors = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(max(1, size_mb // 4))}
            tensors["position_ids"] = torch.arange(4096).unsqueeze(0)
            save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
            (path / "config.json").write_text("{}")
        paths.append(path)
    return paths


def running_sum(paths: list[Path], out: Path) -> None:
    """The competent baseline: one state dict in memory at a time, float32 accumulator, divide, save."""
    import torch
    from safetensors.torch import load_file, save_file

    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        for name, tensor in load_file(path / "model.safetensors").items():
            if name not in total:
                dtypes[name] = tensor.dtype
                total[name] = tensor.float() if tensor.dtype.is_floating_point else tensor
            elif tensor.dtype.is_floating_point:
                total[name].add_(tensor)
    soup = {name: t.div_(len(paths)).to(dtypes[name]) if dtypes[name].is_floating_point else t
            for name, t in total.items()}
    out.mkdir()
    save_file(soup, out / "model.safetensors", metadata={"format": "pt"})


def read_files(paths: list[Path]) -> None:
    buffer = bytearray(64 << 20)
    for path in paths:
        with open(path / "model.safetensors", "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


def fresh_output(out: Path) -> None:
    """Remove the last soup and flush every dirty page before the next contender's clock starts.

    Why the flush: the kernel writes a finished soup back to disk while the next process runs,
    and a writer that hits the dirty-page limit is throttled; without ``sync`` a contender pays
    for the one before it (seen as 0.1-0.9 s for the same 256 MiB soup on a quiet machine).
    """
    shutil.rmtree(out, ignore_errors=True)
    os.sync()


def child(mode: str, paths: list[Path], out: Path, threads: int) -> None:
    """One measurement in this fresh interpreter."""
    import torch  # imported in every mode so all carry the same footprint

    from bettersynth.soup import average_checkpoints

    torch.set_num_threads(threads)
    base_mb = status_mb("VmRSS")
    with Clock() as clock:
        if mode == "streamed":
            average_checkpoints(paths, None, out)
        elif mode == "running_sum":
            running_sum(paths, out)
        else:
            read_files(paths)
    emit(clock.result(peak_mb=status_mb("VmHWM"), grow_mb=status_mb("VmHWM") - base_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, nargs="+", default=[256], help="size of each checkpoint (MiB)")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8], help="numbers of ingredients")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per N and size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each run")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder for checkpoints (deleted after)")
    parser.add_argument("--out-parent", type=Path,
                        help="where the soups are written (default: beside the checkpoints); e.g. a tmpfs, to "
                             "take the disk's write cost out of the comparison")
    parser.add_argument("--json", type=Path, help="write the ratios here (for harness.py table)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.paths, args.out, args.threads)
        return
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-soup-", dir=args.workdir))
    out = (Path(tempfile.mkdtemp(prefix="bench-soup-out-", dir=args.out_parent)) if args.out_parent else root) / "soup"
    ratios = []
    try:
        for size_mb in args.size_mb:
            for count in args.counts:
                paths = make_checkpoints(root / f"{size_mb}mb", count, size_mb)
                contenders = [Contender(mode, [sys.executable, __file__, "--child", mode, "--threads", str(args.threads),
                                               "--out", str(out), "--paths", *map(str, paths)]) for mode in MODES]
                print(f"N={count}, {size_mb} MiB checkpoints:", flush=True)
                results = run_rounds(contenders, args.rounds, before_each=lambda _: fresh_output(out))
                label = f"soup N={count}, {size_mb} MiB" + (f", soup written to {args.out_parent}" if args.out_parent else "")
                for found in (compare(results, "streamed", "read", "seconds", "<=", TIME_VS_READ, label),
                              compare(results, "streamed", "running_sum", "seconds", "<=", TIME_VS_RUNNING_SUM, label),
                              compare(results, "streamed", "read", "cpu_seconds", label=label),
                              compare(results, "streamed", "running_sum", "cpu_seconds", label=label)):
                    ratios.append(found)
                    print("  " + found.line(), flush=True)
                for mode in ("streamed", "running_sum"):
                    per_round = [r["grow_mb"] / size_mb for r in results[mode]]
                    print(f"  {mode} peak over imports / one checkpoint: max {max(per_round):.3f} "
                          f"(target <= {MEMORY_TARGET} for streamed)", flush=True)
                # memory as a ratio against one checkpoint: a fixed baseline, same in every round
                mem = {"streamed": results["streamed"], "checkpoint": [{"grow_mb": size_mb}] * args.rounds}
                ratios.append(compare(mem, "streamed", "checkpoint", "grow_mb", "<=", MEMORY_TARGET, label,
                                      note="peak RSS over imports"))
            shutil.rmtree(root / f"{size_mb}mb", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(out.parent, ignore_errors=True)
    print(f"load average after: {load_average()}")
    if args.json:
        command = (f"python benchmarks/bench_soup.py --size-mb {' '.join(map(str, args.size_mb))} "
                   f"--counts {' '.join(map(str, args.counts))} --rounds {args.rounds} --threads {args.threads}"
                   + (f" --out-parent {args.out_parent}" if args.out_parent else ""))
        write_json(args.json, "Model soups", command, ratios, load_before,
                   "fp32 random checkpoints, warm page cache; memory is VmHWM over the RSS after imports.")


if __name__ == "__main__":
    main()
