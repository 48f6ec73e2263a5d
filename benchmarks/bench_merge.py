"""The fan-in step (``merge_shards``) at two row counts: its peak memory must not grow with the rows.

Why: the production pipeline filters and captions shards in parallel and merges
them back in source order, with summed accounting and cross-shard duplicate
ids rejected. At 400k-10M samples that merge must stream: the target is peak
RSS at the largest size <= 1.2x that at the smallest. The baseline is what a
competent engineer writes for a fan-in whose order is known: stream the
shards' lines in a known order, parsing each for its id and dropping repeated ids with a Python set
(no order search, no counts, no rejection records; its memory grows with the ids).
Both run in fresh interpreters with the same imports, interleaved over
``--rounds`` (benchmarks/harness.py). Samples are text-only here, so what is
measured is the rows, not image links.

    python benchmarks/bench_merge.py --rows 100000 1000000 --shards 8 --rounds 3 --json benchmarks/results/merge.json
"""

from __future__ import annotations

import argparse
import json
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
FILES = ("samples.jsonl", "outcomes.jsonl", "rejected.jsonl")


def make_shards(root: Path, rows: int, shards: int) -> tuple[Path, list[Path]]:
    """A source of ``rows`` samples cut into ``shards`` processed folders: 1 in 10 filtered, 1 in 1000 rejected,
    and one id of shard 0 repeated in the last shard (which the merge must reject)."""
    source = root / "source"
    source.mkdir(parents=True)
    bounds = [rows * i // shards for i in range(shards + 1)]
    folders = []
    with (source / "samples.jsonl").open("w", encoding="utf-8") as src:
        for index in range(shards):
            folder = root / f"shard-{index}"
            folder.mkdir()
            counts = dict.fromkeys(("n_in", "kept", "kept_from_input", "filtered", "rejected", "added", "added_kept"), 0)
            with (folder / "samples.jsonl").open("w", encoding="utf-8") as kept, \
                    (folder / "outcomes.jsonl").open("w", encoding="utf-8") as outcomes, \
                    (folder / "rejected.jsonl").open("w", encoding="utf-8") as rejected:
                numbers = list(range(bounds[index], bounds[index + 1]))
                if index == shards - 1:
                    numbers.append(0)  # a duplicate id from the first shard
                for number in numbers:
                    sample = {"id": f"s{number:08d}", "text": f"a caption of sample {number} with a few more words"}
                    if number != 0 or index == 0:
                        src.write(json.dumps(sample) + "\n")
                    counts["n_in"] += 1
                    if number % 1000 == 7:
                        rejected.write(json.dumps({"id": sample["id"], "op": "reader", "error": "bad image"}) + "\n")
                        outcomes.write(json.dumps({"id": sample["id"], "status": "rejected", "op": "reader"}) + "\n")
                        counts["rejected"] += 1
                    elif number % 10 == 3:
                        outcomes.write(json.dumps({"id": sample["id"], "status": "filtered", "op": "words_num_filter"}) + "\n")
                        counts["filtered"] += 1
                    else:
                        kept.write(json.dumps(sample) + "\n")
                        outcomes.write(json.dumps({"id": sample["id"], "status": "kept"}) + "\n")
                        counts["kept"] += 1
                        counts["kept_from_input"] += 1
            (folder / "report.json").write_text(json.dumps({**counts, "per_op": [], "recipe_hash": "bench"}))
            folders.append(folder)
    return source, folders


def plain_merge(shards: list[Path], out: Path) -> int:
    """The baseline: stream each shard's lines in the given order, parse each for its id, drop input samples whose
    id an earlier shard had (a Python set of ids), copy the rest as they are; returns the samples written."""
    out.mkdir(parents=True)
    seen: set[str] = set()
    written = 0
    with (out / "samples.jsonl").open("w", encoding="utf-8") as samples, \
            (out / "outcomes.jsonl").open("w", encoding="utf-8") as outcomes, \
            (out / "rejected.jsonl").open("w", encoding="utf-8") as rejected:
        for shard in shards:
            repeated = set()
            with (shard / "outcomes.jsonl").open(encoding="utf-8") as source:
                for line in source:
                    sample_id = json.loads(line)["id"]
                    if sample_id in seen:
                        repeated.add(sample_id)
                        continue
                    seen.add(sample_id)
                    outcomes.write(line)
            with (shard / "samples.jsonl").open(encoding="utf-8") as source:
                for line in source:
                    if json.loads(line)["id"] not in repeated:
                        samples.write(line)
                        written += 1
            with (shard / "rejected.jsonl").open(encoding="utf-8") as source:
                rejected.writelines(source)
    return written


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh interpreter (the same imports for both contenders)."""
    from bettersynth.steps.shards import merge_shards

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    shards = sorted(Path(args.root).glob("shard-*"), key=lambda p: int(p.name.split("-")[1]))
    base = status_mb("VmRSS")
    with Clock() as clock:
        if args.child == "plain":
            kept = plain_merge(shards, out)
        else:
            kept = merge_shards(list(reversed(shards)), Path(args.root) / "source", out)["kept"]
    shutil.rmtree(out, ignore_errors=True)
    emit(clock.result(kept=kept, peak_mb=status_mb("VmHWM"), grow_mb=status_mb("VmHWM") - base, base_mb=base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=8)
    add_common_arguments(parser, "parent of the temp folder for the shards (deleted after)")
    parser.add_argument("--child", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-merge-", dir=args.workdir))
    try:
        contenders = []
        for rows in args.rows:
            make_shards(work / f"rows-{rows}", rows, args.shards)
            for name in ("ours", "plain"):
                contenders.append(Contender(f"{name}-{rows}", [sys.executable, __file__, "--child", name,
                                                               "--root", str(work / f"rows-{rows}"), "--out", str(work / "out")]))
        results = run_rounds(contenders, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for rows in args.rows:  # both drop the one repeated id
        ours, plain = results[f"ours-{rows}"][0]["kept"], results[f"plain-{rows}"][0]["kept"]
        if ours != plain:
            raise RuntimeError(f"at {rows} rows: the merge kept {ours}, the baseline {plain}")
    small, large = min(args.rows), max(args.rows)
    ratios = [compare(results, f"ours-{n}", f"plain-{n}", "seconds", label=f"merge, {n} rows, {args.shards} shards")
              for n in args.rows]
    ratios += peak_memory_ratios(results, f"ours-{large}", f"ours-{small}", RATIO_TARGET, "merge")
    for ratio in ratios:
        print(ratio.line())
    for name, runs in results.items():
        print(f"  {name}: peak {max(r['peak_mb'] for r in runs):.0f} MB, over imports {max(r['grow_mb'] for r in runs):.1f} MB, "
              f"kept {runs[0]['kept']}, {min(r['seconds'] for r in runs):.1f} s")
    print(f"load average after: {load_average()}")
    if args.json:
        command = (f"python benchmarks/bench_merge.py --rows {' '.join(map(str, args.rows))} "
                   f"--shards {args.shards} --rounds {args.rounds}")
        write_json(args.json, "Fan-in (merge_shards)", command, ratios, load_before,
                   "Text-only samples; the baseline streams the shards in a known order and drops repeated ids with a Python set.")


if __name__ == "__main__":
    main()
