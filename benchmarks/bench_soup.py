"""Peak RSS and wall time of a streamed soup vs loading all N checkpoints at once.

Why: the soup module promises memory of about one tensor per ingredient; this
measures it against the naive way (WePOINTS-style: load N state dicts, average,
save) and against the time it takes just to read the N checkpoints.

Each measurement runs in a fresh interpreter so its peak RSS is its own.
Files are read from a warm page cache (they were just written).

    python benchmarks/bench_soup.py --size-mb 256 --counts 2 4 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_checkpoints(root: Path, count: int, size_mb: int) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    side = 1024  # 4 MiB fp32 tensors
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


def run_mode(mode: str, paths: list[Path], out: Path, threads: int) -> None:
    import torch  # imported in every mode so the baselines carry torch's own footprint
    from safetensors.torch import load_file, save_file

    from bettersynth.soup import average_checkpoints

    torch.set_num_threads(threads)
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
        for p in paths:
            with open(p / "model.safetensors", "rb") as handle:
                while handle.read(64 << 20):
                    pass
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: the latter can carry the parent's peak across fork + exec
    status = Path("/proc/self/status").read_text()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="size of each checkpoint")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8], help="numbers of ingredients")
    parser.add_argument("--workdir", type=Path, default=None, help="where checkpoints go (default: a temp dir)")
    # On a shared box torch's intra-op threads mostly wait on each other: 1 gives steadier numbers.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each run")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.paths, args.out, args.threads)
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-soup-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{'N':>3} {'mode':>9} {'seconds':>8} {'peak RSS MB':>12}  "
          f"(checkpoint {args.size_mb} MB, {args.threads} thread(s))")
    try:
        for count in args.counts:
            paths = make_checkpoints(root, count, args.size_mb)
            for mode in ("read", "streamed", "naive"):
                out = root / f"soup_{mode}_{count}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, __file__, "--mode", mode, "--threads", str(args.threads), "--out", str(out),
                       "--paths", *map(str, paths)]
                result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                print(f"{count:>3} {mode:>9} {result['seconds']:>8.2f} {result['peak_rss_mb']:>12.0f}")
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
