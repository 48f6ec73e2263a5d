"""``bettersynth data``: dataset variants under DVC (checkout, lineage log) and the ``dvc repro`` stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def one_line_errors(command: str):
    """Report what a user can fix (a wrong reference, remote or path) as one line on stderr, exit status 1;
    the traceback only with ``bettersynth -v``."""
    import functools

    def wrap(run):
        @functools.wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            from bettersynth.core.retry import ServiceUnavailable
            from bettersynth.versioning.dvc import RemoteMissing

            try:
                return run(args)
            except (ValueError, OSError, RemoteMissing, ServiceUnavailable) as exc:
                if getattr(args, "verbose", False):
                    raise
                print(f"bettersynth {command}: {_sentence(exc)} (-v for the traceback)", file=sys.stderr)
                return 1
        return guarded
    return wrap


def _sentence(exc: BaseException) -> str:
    from bettersynth.core.retry import ServiceUnavailable

    if isinstance(exc, ServiceUnavailable):  # its own text tells a pipeline step to rerun; a command says more
        cause = str(exc.__cause__ or "").strip().splitlines()
        hint = "; to use another remote: dvc remote modify --local <name> url <url>" if exc.service.startswith("DVC") else ""
        return f"{exc.service} at {exc.url} failed after {exc.attempts} attempt(s)" + (f": {cause[0]}" if cause else "") + hint
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return " ".join(str(exc).split())


@one_line_errors("data checkout")
def checkout(args: argparse.Namespace) -> int:
    import mlflow

    from bettersynth.tracking.runs import cli_tracking_uri
    from bettersynth.versioning.dvc import checkout as restore
    from bettersynth.versioning.manifests import manifest_pointer

    if manifest_pointer(Path(args.workspace), args.reference) is not None:  # a manifest variant: its folder, as a copy restores it
        from bettersynth.steps.manifest_variant import checkout as restore_manifest

        path, dataset_hash = restore_manifest(Path(args.workspace), args.reference, args.name)
        print(f"restored {dataset_hash} (manifest {args.reference}) into {path}")
        return 0
    mlflow.set_tracking_uri(cli_tracking_uri(Path(args.workspace), args.tracking_uri))
    path, resolved = restore(Path(args.workspace), args.reference, args.name)
    print(f"restored {resolved.dataset_hash} ({resolved.how} {args.reference}) into {path}")
    return 0


@one_line_errors("data version-manifest")
def version_manifest(args: argparse.Namespace) -> int:
    """A folder as a manifest variant: its images stored once in the shard store, DVC on the manifest and new shards."""
    from bettersynth.steps.manifest_variant import version_folder

    version = version_folder(Path(args.workspace), Path(args.folder), args.name, store_url=args.store)
    print(f"versioned {args.folder} as manifest {args.name} ({version.dataset_hash}, {len(version.tracked)} new store files)")
    return 0


INGEST_FORMATS = ("folder", "dj", "llava", "wds")
EXPORT_FORMATS = ("folder", "llava", "wds")


def source_format(sources: list[str]) -> str:
    """What ``data ingest`` reads when ``--format`` is not given, from the sources' names."""
    if all(source.endswith(".tar") for source in sources):
        return "wds"
    if len(sources) == 1:
        source = Path(sources[0])
        if source.is_dir():
            return "folder"
        if source.suffix == ".jsonl":
            return "dj"
        if source.suffix == ".json":
            return "llava"
    raise ValueError(f"cannot tell the format of {sources}: give --format ({', '.join(INGEST_FORMATS)}); "
                     "only WebDataset takes several sources")


@one_line_errors("data ingest")
def ingest(args: argparse.Namespace) -> int:
    """A dataset as a manifest over a shard store: each image hashed and stored once, whatever format it came in."""
    from bettersynth.data.manifest_ingest import ingest_dj_jsonl, ingest_folder, ingest_llava_json, ingest_wds
    from bettersynth.data.shards import ShardStore

    kind = args.format or source_format(args.source)
    if kind != "wds" and len(args.source) != 1:
        raise ValueError(f"--format {kind} reads one source, got {len(args.source)}")
    store = ShardStore(args.store, args.endpoint_url)
    source, root = args.source[0], Path(args.image_root) if args.image_root else None
    readers = {
        "folder": lambda: ingest_folder(Path(source), store, args.manifest, args.endpoint_url),
        "dj": lambda: ingest_dj_jsonl(Path(source), store, args.manifest, root, args.endpoint_url),
        "llava": lambda: ingest_llava_json(Path(source), store, args.manifest, root, args.endpoint_url),
        "wds": lambda: ingest_wds(args.source, store, args.manifest, args.endpoint_url),
    }
    done = readers[kind]()
    print(f"ingested {done.info.get('n_samples', '?')} samples ({kind}) as {args.manifest}: {done.added} images stored, "
          f"{done.reused} already in {args.store}, {len(done.new_shards)} new shards")
    return 0


@one_line_errors("data export")
def export(args: argparse.Namespace) -> int:
    """A manifest back to files every existing tool reads: a variant folder (Data-Juicer jsonl), LLaVA json, WebDataset."""
    from bettersynth.data.manifest_export import export_folder, export_llava_json, export_wds

    writers = {
        "folder": lambda: export_folder(args.manifest, Path(args.out), endpoint_url=args.endpoint_url),
        "llava": lambda: export_llava_json(args.manifest, Path(args.out), endpoint_url=args.endpoint_url),
        "wds": lambda: export_wds(args.manifest, Path(args.out), endpoint_url=args.endpoint_url),
    }
    writers[args.format]()
    print(f"exported {args.manifest} ({args.format}) to {args.out}")
    return 0


def history(args: argparse.Namespace) -> int:
    from bettersynth.versioning.dvc import list_variants

    for variant in list_variants(Path(args.workspace)):
        print(f"{variant['name']:<24}{variant['dataset_hash']:<40}{variant['meta']}")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Stage ``demo`` of dvc.yaml: the demo world and the tiny models the recipes name."""
    import yaml

    from bettersynth_demo.quickstart import prepare_inputs
    from bettersynth_demo.world import WorldConfig

    settings = yaml.safe_load(Path(args.params).read_text()) or {}
    try:
        world = WorldConfig(**settings.get("demo", {}).get("world", {}))
    except TypeError as exc:
        raise ValueError(f"{args.params}: demo.world: {exc}") from None
    prepare_inputs(Path(args.out), world)
    print(f"demo world and tiny models under {args.out}")
    return 0


@one_line_errors("data apply")
def apply(args: argparse.Namespace) -> int:
    """Stages ``filter`` / ``caption`` of dvc.yaml: the pipeline's operator code, without MLflow.

    A multi-round recipe runs round by round (``run_rounds``) and prints each round's counts."""
    from dataclasses import asdict

    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.rounds import run_rounds
    from bettersynth.recipes.runner import run_recipe
    from bettersynth.steps.process import seeded_fraction

    recipe = Recipe.load(args.recipe)
    source, out = Path(args.input), Path(args.out)
    select = seeded_fraction(args.fraction, args.seed) if args.fraction < 1.0 else None
    if recipe.is_multi_round:
        report = run_rounds(recipe, source / "samples.jsonl", source, out, model_root=Path(args.model_root),
                            batch_size=args.batch_size, select=select)
        counts = report.step_counts()
        for r in report.rounds:
            print(f"  round {r.round} {r.name}: {r.n_in} in, {r.selected} selected, {r.filtered} filtered, {r.rejected} rejected "
                  f"({r.replaced} replaced, {r.removed} removed), {r.created_kept} added, {r.n_out} out")
    else:
        counts = asdict(run_recipe(
            recipe, source / "samples.jsonl", source, out, model_root=Path(args.model_root), batch_size=args.batch_size,
            select=select, resume_key=f"fraction={args.fraction},seed={args.seed}",
        ))
    print(f"{args.recipe}: {counts['n_in']} in, {counts['kept']} kept, {counts['filtered']} filtered, "
          f"{counts['rejected']} rejected ({counts['replaced']} replaced, {counts['removed']} removed), "
          f"{counts['added_kept']} added")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset variants under DVC").add_subparsers(dest="data_command", required=True)
    parser = data.add_parser("checkout", help="restore a variant's exact bytes by variant name, DVC hash or MLflow run id")
    parser.add_argument("reference", help="variant name, DVC hash (<md5>.dir) or MLflow run id")
    parser.add_argument("--name", help="folder name under data/variants when no pointer exists")
    parser.add_argument("--workspace", default=".", help="the DVC project")
    parser.add_argument("--tracking-uri", help="MLflow store for run ids (default: $MLFLOW_TRACKING_URI, else <workspace>/mlflow.db)")
    parser.set_defaults(run=checkout)
    parser = data.add_parser("version-manifest", help="version a variant folder as a manifest over the shard store")
    parser.add_argument("folder", help="folder with samples.jsonl and its images")
    parser.add_argument("--name", required=True, help="variant name (data/manifests/<name>)")
    parser.add_argument("--workspace", default=".", help="the DVC project")
    parser.add_argument("--store", help="shard store URL (default: $BETTERSYNTH_STORE, else data/store in the project)")
    parser.set_defaults(run=version_manifest)
    parser = data.add_parser("ingest", help="a dataset (folder, Data-Juicer jsonl, LLaVA json, WebDataset tars) as a manifest")
    parser.add_argument("source", nargs="+", help="a folder, a .jsonl, a .json, or WebDataset .tar shards (any fsspec URL)")
    parser.add_argument("--manifest", required=True, help="where the manifest goes (a folder or fsspec URL)")
    parser.add_argument("--store", required=True, help="the shard store URL the images go to (a folder or s3://...)")
    parser.add_argument("--format", choices=INGEST_FORMATS, help="default: from the source's name")
    parser.add_argument("--image-root", help="jsonl/json: the folder image paths are relative to (default: the file's)")
    parser.add_argument("--endpoint-url", help="S3 endpoint for s3:// URLs (e.g. MinIO)")
    parser.set_defaults(run=ingest)
    parser = data.add_parser("export", help="a manifest back to a variant folder, LLaVA json or WebDataset tars")
    parser.add_argument("manifest", help="the manifest (a folder or fsspec URL)")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="folder",
                        help="folder: samples.jsonl (Data-Juicer) and images, exactly as ingested (default)")
    parser.add_argument("--endpoint-url", help="S3 endpoint for s3:// URLs (e.g. MinIO)")
    parser.set_defaults(run=export)
    parser = data.add_parser("log", help="list variants and their lineage")
    parser.add_argument("--workspace", default=".")
    parser.set_defaults(run=history)
    parser = data.add_parser("demo", help="(dvc repro stage) build the demo world and tiny models")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=demo)
    parser = data.add_parser("apply", help="(dvc repro stage) run a recipe over a folder, as the pipeline's data steps do")
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--input", required=True, help="folder with samples.jsonl and its images")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model-root", required=True)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of samples mappers touch (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.set_defaults(run=apply)
