"""A data step's peak memory and time at two sizes, against a plain streaming read/write loop.

Why: seed sets are 400k-1.2M samples. The runner streams the input in chunks
(``chunk_size`` lines through the whole op list, written out, then the next),
so its peak RSS must not grow with the dataset (target: peak over the import
baseline at the largest size <= 1.2x that at the smallest, and absolute peak
ratio <= 1.2) and its time should stay close to what a competent engineer
writes without the platform: read a line, parse it, apply the same three
checks (word count, image file size, image header shape), write the kept line
and hard-link its image. Both run the same generated samples (one small PNG
each) in fresh interpreters, interleaved over ``--rounds`` (benchmarks/harness.py);
the platform's recipe is ``words_num_filter``, ``image_size_filter`` and
``image_shape_filter`` plus the image export.

    python benchmarks/bench_memory.py --sizes 10000 100000 --rounds 3 --json benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness import (
    Clock,
    Contender,
    add_common_arguments,
    compare,
    emit,
    load_average,
    peak_memory_ratios,
    run_rounds,
    status_mb,
    write_json,
)

RATIO_TARGET = 1.2  # peak RSS at the largest size over the smallest
MIN_WORDS, MIN_BYTES, MAX_BYTES, MIN_SIDE = 3, 64, 10**6, 8
RECIPE = {"name": "bench-memory", "use_cache": False, "process": [
    {"words_num_filter": {"min_num": MIN_WORDS}},
    {"image_size_filter": {"min_size": f"{MIN_BYTES}B", "max_size": "1MB"}},
    {"image_shape_filter": {"min_width": MIN_SIDE, "min_height": MIN_SIDE}},
]}


def make_dataset(root: Path, n: int) -> None:
    """``n`` samples, one small PNG each (a few distinct encodings, written as bytes: fast)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    variants = []
    for k in range(64):
        buffer = io.BytesIO()
        size = (6 + k % 11, 6 + k % 7)  # some below MIN_SIDE, so the shape filter drops a few
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
        variants.append(buffer.getvalue())
    words = ["a", "red", "bus", "on", "the", "street", "near", "a", "small", "park", "with", "trees", "and", "people"]
    with (root / "samples.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(n):
            rel = f"imgs/{i // 1000:03d}/{i:06d}.png"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(variants[i % len(variants)])
            caption = " ".join(words[: 1 + i % 12] + [str(i)])
            handle.write(json.dumps({"id": f"b{i:06d}", "text": f"<__dj__image> {caption} <|__dj__eoc|>", "images": [rel]}) + "\n")


def plain(input_jsonl: Path, root: Path, out: Path) -> tuple[int, int]:
    """The baseline: one line at a time, the same checks, kept lines written and images hard-linked."""
    from PIL import Image

    special = ("<__dj__image>", "<|__dj__eoc|>")
    n_in = kept = 0
    (out / "images").mkdir(parents=True)
    with input_jsonl.open(encoding="utf-8") as source, (out / "samples.jsonl").open("w", encoding="utf-8") as target:
        for line in source:
            n_in += 1
            record = json.loads(line)
            text = record["text"]
            for token in special:
                text = text.replace(token, " ")
            if len(text.split()) < MIN_WORDS:
                continue
            image = root / record["images"][0]
            if not MIN_BYTES <= image.stat().st_size <= MAX_BYTES:
                continue
            with Image.open(image) as opened:
                if min(opened.size) < MIN_SIDE:
                    continue
            placed = out / "images" / record["images"][0]
            placed.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, placed)
            target.write(line)
            kept += 1
    return n_in, kept


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh interpreter (the same imports for both contenders)."""
    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.runner import run_recipe

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    base = status_mb("VmRSS")
    with Clock() as clock:
        if args.child == "plain":
            n_in, kept = plain(Path(args.input), Path(args.root), out)
        else:
            report = run_recipe(Recipe.from_dict(RECIPE), Path(args.input), Path(args.root), out, num_workers=0,
                                chunk_size=args.chunk_size)
            n_in, kept = report.n_in, report.kept
    shutil.rmtree(out, ignore_errors=True)
    emit(clock.result(n_in=n_in, kept=kept, peak_mb=status_mb("VmHWM"), grow_mb=status_mb("VmHWM") - base,
                      base_mb=base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=2048)
    add_common_arguments(parser, "parent of the temp folder for the dataset (deleted after)")
    parser.add_argument("--child", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.workdir))
    try:
        root = work / "data"
        root.mkdir()
        make_dataset(root, max(args.sizes))
        contenders = []
        for n in args.sizes:
            jsonl = work / f"in-{n}.jsonl"
            with (root / "samples.jsonl").open("rb") as source, jsonl.open("wb") as target:
                target.writelines(line for _, line in zip(range(n), source))
            for name in ("ours", "plain"):
                contenders.append(Contender(f"{name}-{n}", [sys.executable, __file__, "--child", name, "--input", str(jsonl),
                                                            "--root", str(root), "--out", str(work / "out"),
                                                            "--chunk-size", str(args.chunk_size)]))
        results = run_rounds(contenders, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for runs in results.values():  # both contenders must have kept the same samples
        if len({(r["n_in"], r["kept"]) for r in runs}) != 1:
            raise RuntimeError(f"kept counts differ between rounds: {runs}")
    for n in args.sizes:
        ours, base = results[f"ours-{n}"][0], results[f"plain-{n}"][0]
        if (ours["n_in"], ours["kept"]) != (base["n_in"], base["kept"]):
            raise RuntimeError(f"at {n}: ours kept {ours['kept']} of {ours['n_in']}, plain {base['kept']} of {base['n_in']}")
    small, large = min(args.sizes), max(args.sizes)
    ratios = [compare(results, f"ours-{n}", f"plain-{n}", "seconds", label=f"data step, {n} samples") for n in args.sizes]
    ratios += peak_memory_ratios(results, f"ours-{large}", f"ours-{small}", RATIO_TARGET, "data step")
    for ratio in ratios:
        print(ratio.line())
    for name, runs in results.items():
        print(f"  {name}: peak {max(r['peak_mb'] for r in runs):.0f} MB, over imports {max(r['grow_mb'] for r in runs):.1f} MB, "
              f"kept {runs[0]['kept']} of {runs[0]['n_in']}")
    print(f"load average after: {load_average()}")
    if args.json:
        command = (f"python benchmarks/bench_memory.py --sizes {' '.join(map(str, args.sizes))} "
                   f"--chunk-size {args.chunk_size} --rounds {args.rounds}")
        write_json(args.json, "Data step (memory, time)", command, ratios, load_before,
                   "Both contenders import the platform (same RSS baseline); decoding workers 0.")


if __name__ == "__main__":
    main()
