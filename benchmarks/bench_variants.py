"""Versioning a parent variant and a child that changes 2 % of it: today's copies against manifests.

Why: a team keeps dozens of variants of a 400k-sample seed set. Today each
variant is a full copy (``version_variant``: the folder copied into
``data/variants/<name>``, every file hashed by ``dvc add`` and pushed); a
manifest variant (``steps.manifest_variant``) stores each image once in tar
shards and versions the manifest plus the new shards. Target: the manifest
child costs at most 5 % of its parent's bytes and time.

Each design runs in a fresh interpreter and a fresh DVC project with a local
remote, interleaved over ``--rounds`` (benchmarks/harness.py), on the same
generated data: ``--samples`` small JPEGs (each unique, about 1.5 KB) with
captions, and a child folder where every 50th sample has a new caption and a
new image (the old image gone, as a step's export leaves it). Printed per
design and variant: seconds, bytes written (new files in the project, its DVC
cache, its remote and the store) and files pushed (new files in the remote).

    python benchmarks/bench_variants.py --samples 400000 --rounds 3 --json benchmarks/results/variants.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from harness import Clock, Contender, Ratio, add_common_arguments, compare, emit, load_average, run_rounds, write_json

CHANGE_EVERY = 50  # 2 % of the samples change in the child
TARGET = 0.05  # child / parent, bytes and seconds, for manifests
WORDS = ["a", "red", "bus", "on", "the", "street", "near", "small", "park", "with", "tall", "trees", "and", "people"]


def base_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def unique_jpeg(base: bytes, tag: str) -> bytes:
    """``base`` with a comment segment naming ``tag``: a valid JPEG with bytes of its own."""
    comment = tag.encode()
    return base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]


def caption(i: int, new: bool = False) -> str:
    words = " ".join(WORDS[: 3 + i % 11])
    return f"<__dj__image> {'a new caption of ' if new else ''}{words} {i} <|__dj__eoc|>"


def make_data(root: Path, n: int) -> tuple[Path, Path, Path]:
    """The parent folder, the child folder (unchanged images hard-linked) and the child's changes (jsonl)."""
    base = base_jpeg()
    parent, child = root / "parent", root / "child"
    lines, child_lines, changes = [], [], []
    for i in range(n):
        rel = f"images/{i // 1000:04d}/{i:07d}.jpg"
        (parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (parent / rel).write_bytes(unique_jpeg(base, f"parent {i}"))
        record = {"id": f"s{i:07d}", "text": caption(i), "images": [rel]}
        lines.append(json.dumps(record) + "\n")
        if i % CHANGE_EVERY == 0:
            new_rel = f"images/new/{i // 1000:04d}/{i:07d}.jpg"
            (child / new_rel).parent.mkdir(parents=True, exist_ok=True)
            (child / new_rel).write_bytes(unique_jpeg(base, f"child {i}"))
            record = {"id": record["id"], "text": caption(i, new=True), "images": [new_rel]}
            changes.append(json.dumps(record) + "\n")
        else:
            (child / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(parent / rel, child / rel)
        child_lines.append(json.dumps(record) + "\n")
    (parent / "samples.jsonl").write_text("".join(lines))
    (child / "samples.jsonl").write_text("".join(child_lines))
    (root / "changes.jsonl").write_text("".join(changes))
    return parent, child, root / "changes.jsonl"


def snapshot(root: Path) -> dict[str, int]:
    """Size of every file under ``root`` (DVC's own scratch in .dvc/tmp left out)."""
    sizes: dict[str, int] = {}
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.path.endswith(os.sep + ".dvc" + os.sep + "tmp"):
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    sizes[entry.path] = entry.stat(follow_symlinks=False).st_size
    return sizes


def written(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """Bytes in files that are new or changed size, and how many of them lie in the remote."""
    new = [p for p, size in after.items() if before.get(p) != size]
    return sum(after[p] for p in new), sum(1 for p in new if f"{os.sep}.dvc-remote{os.sep}" in p)


def measure(design: str, project: Path, parent: Path, child: Path, changes: Path) -> dict:
    from bettersynth.versioning.dvc import ensure_dvc_project

    ensure_dvc_project(project)
    result: dict[str, float] = {}
    for variant in ("parent", "child"):
        prepared = _prepare_child(changes, child) if design == "manifest" and variant == "child" else None
        before = snapshot(project)
        with Clock() as clock:
            if design == "copy":
                from bettersynth.versioning.dvc import version_variant

                version_variant(project, parent if variant == "parent" else child, variant)
            elif variant == "parent":
                from bettersynth.steps.manifest_variant import version_folder

                version_folder(project, parent, "parent")
            else:
                from bettersynth.steps.manifest_variant import version_child

                version_child(project, "parent", "child", replace=prepared)
        nbytes, pushed = written(before, snapshot(project))
        result |= {f"{variant}_seconds": clock.seconds, f"{variant}_cpu_seconds": clock.cpu_seconds,
                   f"{variant}_bytes": nbytes, f"{variant}_pushed": pushed}
    return result


def _prepare_child(changes: Path, child: Path) -> dict:
    """The child as a step hands it to a manifest: the changed records and the bytes of their new images."""
    from bettersynth.data.manifest_edit import Change

    prepared = {}
    for line in changes.read_text().splitlines():
        record = json.loads(line)
        prepared[record["id"]] = Change(record, {rel: (child / rel).read_bytes() for rel in record["images"]})
    return prepared


def child_main(args: argparse.Namespace) -> None:
    project = Path(args.project)
    shutil.rmtree(project, ignore_errors=True)
    try:
        result = measure(args.child, project, Path(args.data) / "parent", Path(args.data) / "child",
                         Path(args.data) / "changes.jsonl")
    finally:
        shutil.rmtree(project, ignore_errors=True)
    emit(result)


def _ratio(results: dict, design: str, metric: str, target: float | None) -> Ratio:
    per_round = [r[f"child_{metric}"] / r[f"parent_{metric}"] for r in results[design]]
    medians = {f"{design} child": statistics.median(r[f"child_{metric}"] for r in results[design]),
               f"{design} parent": statistics.median(r[f"parent_{metric}"] for r in results[design])}
    return Ratio(f"{design}: child (2 % changed) / parent", f"{design} child", f"{design} parent", metric, per_round,
                 "<=" if target is not None else "", target, medians=medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400_000)
    add_common_arguments(parser, "parent of the temp folder (deleted after)")
    parser.add_argument("--child", choices=("copy", "manifest"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    load_before = load_average()
    print(f"load average before: {load_before}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-variants-", dir=args.workdir))
    try:
        with Clock() as made:
            make_data(scratch / "data", args.samples)
        print(f"{args.samples} samples generated in {made.seconds:.1f} s", flush=True)
        script = str(Path(__file__).resolve())
        contenders = [Contender(design, [sys.executable, script, "--child", design, "--data", str(scratch / "data"),
                                         "--project", str(scratch / f"project-{design}")]) for design in ("copy", "manifest")]
        results = run_rounds(contenders, args.rounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for design, runs in results.items():
        for variant in ("parent", "child"):
            med = {k: statistics.median(r[f"{variant}_{k}"] for r in runs) for k in ("seconds", "cpu_seconds", "bytes", "pushed")}
            print(f"{design:<9} {variant:<7} {med['seconds']:9.2f} s  {med['cpu_seconds']:9.2f} cpu-s  "
                  f"{med['bytes'] / 2**20:10.1f} MiB written  {int(med['pushed']):8d} files pushed")
    label = f"{args.samples} samples"
    ratios = [_ratio(results, "manifest", "bytes", TARGET), _ratio(results, "manifest", "seconds", TARGET),
              _ratio(results, "copy", "bytes", None), _ratio(results, "copy", "seconds", None)]
    for variant in ("parent", "child"):
        for metric in ("seconds", "bytes", "pushed"):
            ratios.append(compare(results, "manifest", "copy", f"{variant}_{metric}", label=f"{variant}, {label}"))
    for ratio in ratios:
        print(ratio.line())
    print(f"load average after: {load_average()}")
    if args.json:
        write_json(args.json, "Variants: copies vs manifests", f"python benchmarks/bench_variants.py --samples {args.samples} "
                   f"--rounds {args.rounds}", ratios, load_before)


if __name__ == "__main__":
    main()
