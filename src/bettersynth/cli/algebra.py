"""``bettersynth algebra``: mix, repeat, cap or replace variants; optionally version the result with DVC."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def _parent_hash(path: Path) -> str | None:
    """The DVC hash of a source variant when it is tracked (``<dir>.dvc`` beside it)."""
    from bettersynth.versioning.dvc import pointer_hash

    pointer = path.with_name(path.name + ".dvc")
    return pointer_hash(pointer) if pointer.exists() else None


def _part(text: str):
    from bettersynth.data.algebra import Part

    path, _, ratio = text.rpartition(":")
    if not path:
        raise argparse.ArgumentTypeError(f"expected DIR:RATIO, got {text!r}")
    return Part(Path(path), float(ratio))


def run(args: argparse.Namespace) -> int:
    from bettersynth.data import algebra

    out = Path(args.out)
    if args.op == "mix":
        report = algebra.mix(args.part, out, total=args.total, seed=args.seed)
        sources = [p.path for p in args.part]
    elif args.op == "repeat":
        ids = set(Path(args.ids).read_text().split()) if args.ids else None
        report = algebra.repeat(Path(args.source), out, args.times, ids)
        sources = [Path(args.source)]
    elif args.op == "cap":
        report = algebra.cap(Path(args.source), out, args.n, args.seed)
        sources = [Path(args.source)]
    else:
        report = algebra.replace(Path(args.source), Path(args.replacement), out)
        sources = [Path(args.source), Path(args.replacement)]
    print(json.dumps(asdict(report), indent=2, default=str))
    if args.version:
        from bettersynth.versioning.dvc import version_variant

        lineage = {"op": report.op, "params": report.params, "parents": [
            {"path": str(s), "dataset_hash": _parent_hash(s)} for s in sources
        ], "n_out": report.n_out, "added": report.added, "replaced": report.replaced, "removed": report.removed}
        version = version_variant(Path(args.workspace), out, args.version, json.loads(json.dumps(lineage, default=str)))
        print(f"versioned {args.version}: {version.dataset_hash}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("algebra", help="mix / repeat / cap / replace dataset variants")
    ops = parser.add_subparsers(dest="op", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="new variant directory (must be empty or absent)")
    common.add_argument("--version", metavar="NAME", help="also version the result as data/variants/NAME with DVC")
    common.add_argument("--workspace", default=".", help="DVC project for --version")
    mix = ops.add_parser("mix", parents=[common], help="draw from variants by ratio")
    mix.add_argument("--part", type=_part, action="append", required=True, metavar="DIR:RATIO")
    mix.add_argument("--total", type=int, help="samples in the mix (default: as many as the ratios allow)")
    mix.add_argument("--seed", type=int, default=0)
    rep = ops.add_parser("repeat", parents=[common], help="duplicate (a subset of) a variant k times")
    rep.add_argument("source")
    rep.add_argument("--times", type=int, required=True)
    rep.add_argument("--ids", help="file of sample ids to repeat (default: all)")
    cap = ops.add_parser("cap", parents=[common], help="seeded random subsample to N")
    cap.add_argument("source")
    cap.add_argument("--n", type=int, required=True)
    cap.add_argument("--seed", type=int, default=1024)
    rpl = ops.add_parser("replace", parents=[common], help="swap samples for their re-synthesised versions")
    rpl.add_argument("source")
    rpl.add_argument("replacement")
    parser.set_defaults(run=run)
