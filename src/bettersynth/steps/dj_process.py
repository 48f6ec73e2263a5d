"""``bettersynth process --config recipe.yaml``: a Data-Juicer recipe run as ``dj-process`` runs it.

Why: a Data-Juicer user's recipe names its input (``dataset_path``) and its
output (``export_path``); it must run unchanged and leave the files that
user expects, plus the accounting this platform keeps for every input line.
The recipe runs through the ordinary runner (``run_recipe``, or
``run_rounds`` for a recipe with rounds) on the staged input
(``bettersynth.recipes.ingest``), into a variant folder beside the export;
the export is then written from it in Data-Juicer's layout
(``bettersynth.data.dj_export``). Files, for ``export_path: out/result.jsonl``::

    out/result.jsonl             kept samples, Data-Juicer's format (or result-<i>-of-<n>.jsonl shards)
    out/result_stats.jsonl       {"__dj__stats__": ...} per kept sample (Data-Juicer's stats file)
    out/result_rejected.jsonl    {"file", "line", "id", "op", "reason"} per rejected input record
    out/result_filtered.jsonl    {"file", "line", "id", "op", "stat", "value", "bound", "sample"} per filtered one
    out/result_report.json       counts (n_in = kept_from_input + filtered + rejected), per op, keys' handling
    out/result_variant/          the variant (samples.jsonl with stats, images/, outcomes, report): what
                                 --version puts under DVC and the export's image paths point into
    <work_dir>/trace/            with open_tracer: filter-<op>.jsonl, mapper-<op>.jsonl, duplicate-<op>.jsonl

Example::

    report = process_config(Path("recipe.yaml"), model_root=Path("models"), version="clean-v1")
    report["kept"], report["files"]["export"]
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bettersynth.core.sample import STATS_KEY
from bettersynth.engine.inference import DecodeSetting
from bettersynth.data.dj_export import read_records, write_export
from bettersynth.ops import OPERATORS
from bettersynth.ops.base import Filter
from bettersynth.recipes.dj_config import DjSettings, key_handling
from bettersynth.recipes.ingest import StagedInput, stage_dataset
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.rounds import run_rounds
from bettersynth.recipes.runner import DEFAULT_CHUNK_SIZE, run_recipe

log = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"  # open_clip's prefix for a local folder


def process_config(
    config: Path,
    model_root: Path | None = None,
    version: str | None = None,
    workspace: Path = Path("."),
    tracking_uri: str | None = None,
    only_keep_caption: bool = False,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    decode: DecodeSetting = "cpu",
) -> dict[str, Any]:
    """Run the Data-Juicer recipe ``config``; returns the report also written beside the export.

    ``model_root`` is where relative model names resolve (default: the working
    folder), needed only when an op loads a model; every model is looked up
    before any work. ``version`` puts the result under DVC as
    ``data/variants/<version>`` of ``workspace`` with its lineage (recipe hash,
    input, counts), logged to MLflow (``tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else ``<workspace>/mlflow.db``). ``decode`` is
    where the model ops' JPEGs are decoded (``EngineSettings.decode``).
    """
    config = Path(config)
    recipe = Recipe.load(config)
    settings = DjSettings.from_recipe(recipe)
    if not settings.dataset_path:
        raise ValueError(f"{config}: dataset_path: not set; name the Data-Juicer jsonl, LLaVA json or folder to process")
    suffix = settings.export_format
    _check_models(recipe, model_root, config)
    export_path = Path(settings.export_path)
    stem = export_path.name[: -len(suffix) - 1] if export_path.name.lower().endswith(f".{suffix}") else export_path.name
    beside = export_path.parent
    variant = beside / f"{stem}_variant"
    files = {"export": str(export_path), "rejected": str(beside / f"{stem}_rejected.jsonl"),
             "filtered": str(beside / f"{stem}_filtered.jsonl"), "report": str(beside / f"{stem}_report.json"),
             "variant": str(variant)}
    dataset = Path(settings.dataset_path)
    if dataset.exists() and dataset.resolve() in (variant.resolve(), *variant.resolve().parents):
        raise ValueError(f"{config}: export_path {str(export_path)!r} would write its variant {str(variant)!r} into dataset_path")
    work = beside / f".{stem}.ingest"
    staged = stage_dataset(dataset, work, settings.suffixes, settings.add_suffix, only_keep_caption)
    log.info("%s: %d records read from %s (%d rejected while reading)", config, staged.n_read, dataset, staged.n_rejected)
    num_workers = recipe.extra.get("np")  # Data-Juicer's processes: here, the image-decoding workers
    cache_dir = Path(settings.ds_cache_dir) if settings.ds_cache_dir else None
    if recipe.is_multi_round:
        from bettersynth.steps.process import rounds_summary

        result = run_rounds(recipe, staged.jsonl, staged.root, variant, model_root=model_root, batch_size=batch_size,
                            num_workers=num_workers, cache_dir=cache_dir, chunk_size=chunk_size, decode=decode)
        counts = rounds_summary(recipe, result)
    else:
        counts = asdict(run_recipe(recipe, staged.jsonl, staged.root, variant, model_root=model_root, batch_size=batch_size,
                                   num_workers=num_workers, cache_dir=cache_dir, chunk_size=chunk_size, decode=decode))
    fates = _fates(variant / "outcomes.jsonl")
    accounts = _write_accounts(staged, fates, Path(files["rejected"]), Path(files["filtered"]), settings, recipe,
                               Path(settings.work_dir) if settings.work_dir else beside, variant)
    has_filter = any(issubclass(OPERATORS.get(spec.name), Filter) for spec in recipe.ops)
    export = write_export(lambda: read_records(variant / "samples.jsonl"), export_path, suffix, images_prefix=variant.name,
                          shard_size=settings.export_shard_size, keep_stats=settings.keep_stats_in_res_ds,
                          keep_hashes=settings.keep_hashes_in_res_ds, with_stats=has_filter)
    files["export"] = [str(p) for p in export.files] if settings.export_shard_size > 0 else str(export.files[0])
    if export.stats_file is not None:
        files["stats"] = str(export.stats_file)
    if accounts.get("trace"):
        files["trace"] = accounts.pop("trace")
    report = {
        "config": str(config), "project_name": settings.project_name, "recipe_hash": recipe.hash(),
        "dataset_path": str(dataset), "files_read": staged.files,
        "n_in": staged.n_read,
        "kept": counts["kept"],
        "kept_from_input": counts["kept_from_input"],
        "filtered": accounts["filtered"],
        "rejected": accounts["rejected"],
        "rejected_while_reading": staged.n_rejected,
        "added": counts["added"], "added_kept": counts["added_kept"],
        "replaced": counts["replaced"], "removed": counts["removed"] + staged.n_rejected,
        "per_op": counts.get("per_op", []),
        "files": files,
        "keys": key_handling(recipe.extra),
    }
    if counts.get("rounds"):
        report["rounds"] = counts["rounds"]
    _check(report, counts, staged)
    if version:
        report["version"] = _version(variant, version, workspace, tracking_uri, report, dataset)
    _write_json(Path(files["report"]), report)
    shutil.rmtree(work, ignore_errors=True)
    return report


def _check(report: dict[str, Any], counts: dict[str, Any], staged: StagedInput) -> None:
    """Every record read is kept, filtered or rejected, and the runner's counts agree with the files."""
    if report["n_in"] != report["kept_from_input"] + report["filtered"] + report["rejected"]:
        raise RuntimeError(f"accounting error: {report['n_in']} records read != kept_from_input {report['kept_from_input']} "
                           f"+ filtered {report['filtered']} + rejected {report['rejected']}")
    if counts["n_in"] != staged.n_read - staged.n_rejected or counts["filtered"] != report["filtered"] \
            or counts["rejected"] + staged.n_rejected != report["rejected"]:
        raise RuntimeError(f"accounting error: the run's counts {counts['n_in']} in, {counts['filtered']} filtered, "
                           f"{counts['rejected']} rejected disagree with its outcomes")


def _fates(outcomes: Path) -> dict[str, dict[str, Any]]:
    """The last verdict of every dropped input sample (filtered, replaced or rejected), by id."""
    fates: dict[str, dict[str, Any]] = {}
    for record in read_records(outcomes):
        if "source_id" in record or record.get("id") is None or "line" in record:
            continue  # created samples; the runner's own reader saw only staged, good lines
        if record.get("status") in ("filtered", "rejected"):
            fates[str(record["id"])] = record
    return fates


def _write_accounts(
    staged: StagedInput, fates: dict[str, dict[str, Any]], rejected_path: Path, filtered_path: Path,
    settings: DjSettings, recipe: Recipe, work_dir: Path, variant: Path,
) -> dict[str, Any]:
    """``<name>_rejected.jsonl`` and ``<name>_filtered.jsonl`` in input order, and the trace files."""
    traced = set(settings.op_list_to_trace) or {spec.name for spec in recipe.ops}
    traces: dict[str, list[dict[str, Any]]] = {}
    created = _created_by_op(variant, traced, settings.trace_num) if settings.open_tracer else {}
    wanted = {source for pairs in created.values() for source, _ in pairs}
    if settings.open_tracer:
        for fate in fates.values():
            bound = str(fate.get("bound") or "")
            if fate["status"] == "filtered" and bound.startswith("duplicate_of="):
                wanted.add(bound.split("=", 1)[1])
    found: dict[str, dict[str, Any]] = {}
    counts = {"filtered": 0, "rejected": 0}
    order = {name: i for i, name in enumerate(staged.files)}

    def run_rows():
        with staged.where.open(encoding="utf-8") as where_in, staged.jsonl.open(encoding="utf-8") as samples_in:
            for where_line, sample_line in zip(where_in, samples_in):
                where, sample = json.loads(where_line), json.loads(sample_line)
                if str(sample["id"]) in wanted:
                    found[str(sample["id"])] = sample
                fate = fates.get(str(sample["id"]))
                if fate is None:
                    continue
                row = {"file": where["file"], "line": where["line"], "id": where["id"], "op": fate.get("op")}
                if fate["status"] == "rejected":
                    row["reason"] = fate.get("error")
                    yield (order[where["file"]], where["line"]), "rejected", row
                    continue
                row |= {"stat": fate.get("stat"), "value": fate.get("value"), "bound": fate.get("bound")}
                if "replaced_by" in fate:
                    row["replaced_by"] = fate["replaced_by"]
                row["sample"] = sample
                if settings.open_tracer and fate.get("op") in traced and len(traces.setdefault(fate["op"], [])) < settings.trace_num:
                    stats = dict(sample.get(STATS_KEY) or {})
                    if fate.get("stat"):
                        stats[fate["stat"]] = fate.get("value")
                    traces[fate["op"]].append({**sample, STATS_KEY: stats, "_bound": fate.get("bound")})
                yield (order[where["file"]], where["line"]), "filtered", row

    def staging_rows():
        for row in read_records(staged.rejected):
            yield (order[row["file"]], row["line"]), "rejected", row

    tmp = {name: path.with_name(path.name + ".partial") for name, path in (("rejected", rejected_path), ("filtered", filtered_path))}
    handles = {name: path.open("w", encoding="utf-8") for name, path in tmp.items()}
    try:
        for _, kind, row in heapq.merge(run_rows(), staging_rows(), key=lambda item: item[0]):
            handles[kind].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[kind] += 1
    finally:
        for handle in handles.values():
            handle.close()
    os.replace(tmp["rejected"], rejected_path)
    os.replace(tmp["filtered"], filtered_path)
    if settings.open_tracer:
        counts["trace"] = _write_traces(work_dir / "trace", traces, created, found)
    return counts


def _created_by_op(variant: Path, traced: set[str], limit: int) -> dict[str, list[tuple[str, str]]]:
    """For each traced mapper, (source id, new text) of the first ``limit`` samples it created that were kept."""
    out: dict[str, list[tuple[str, str]]] = {}
    for record in read_records(variant / "samples.jsonl"):
        provenance = ((record.get("meta") or {}).get("provenance") or [])
        if not provenance or not isinstance(provenance[-1], dict):
            continue
        op, source = provenance[-1].get("op"), provenance[-1].get("source_id")
        if op in traced and source is not None and len(out.setdefault(op, [])) < limit:
            out[op].append((str(source), record["text"]))
    return out


def _write_traces(trace_dir: Path, traces: dict[str, list[dict[str, Any]]], created: dict[str, list[tuple[str, str]]],
                  found: dict[str, dict[str, Any]]) -> list[str]:
    """Data-Juicer's tracer files: filtered samples per filter, duplicate pairs per deduplicator,
    (original, processed) texts per mapper."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for op, rows in traces.items():
        if op.endswith("_deduplicator"):
            name = f"duplicate-{op}.jsonl"
            lines = [{"dup1": found.get(str(r["_bound"]).split("=", 1)[-1]), "dup2": {k: v for k, v in r.items() if k != "_bound"}}
                     for r in rows]
        else:
            name = f"filter-{op}.jsonl"
            lines = [{k: v for k, v in r.items() if k != "_bound"} for r in rows]
        _write_lines(trace_dir / name, lines)
        written.append(str(trace_dir / name))
    for op, pairs in created.items():
        lines = [{"original text": found[source]["text"], "processed_text": text} for source, text in pairs if source in found]
        if lines:
            _write_lines(trace_dir / f"mapper-{op}.jsonl", lines)
            written.append(str(trace_dir / f"mapper-{op}.jsonl"))
    return written


def _check_models(recipe: Recipe, model_root: Path | None, config: Path) -> None:
    """Every model an op names must be a folder (under ``model_root``, else the working folder): checked before any work."""
    problems = []
    for step, spec in enumerate(recipe.ops):
        for field_name, value in spec.config.model_dump().items():
            if not field_name.startswith("hf_") or not isinstance(value, str) or not value:
                continue
            path = Path(value.removeprefix(LOCAL_DIR))
            if not path.is_absolute():
                path = (Path(model_root) if model_root else Path.cwd()) / path
            if not path.is_dir():
                hint = f"not under --model-root {model_root}" if model_root else "pass --model-root DIR, the folder that holds it"
                problems.append(f"op {step} {spec.name!r}: field {field_name!r}: model {value!r} not found at {str(path)!r}; {hint}")
    if problems:
        raise ValueError(f"{config}: " + ("; ".join(problems) if len(problems) == 1 else
                                          f"{len(problems)} models not found:\n" + "\n".join(f"  - {p}" for p in problems)))


def _version(variant: Path, name: str, workspace: Path, tracking_uri: str | None, report: dict[str, Any], dataset: Path) -> dict:
    """The variant under DVC with its lineage, as the pipeline's version step records it."""
    import mlflow

    from bettersynth.steps.version import version_dataset
    from bettersynth.tracking.runs import cli_tracking_uri
    from bettersynth.versioning.dvc import pointer_hash

    pointer = dataset.with_name(dataset.name + ".dvc")
    lineage = {
        "recipe_hash": report["recipe_hash"], "recipe": report["config"], "project_name": report["project_name"],
        "parent": str(dataset), "parent_hash": pointer_hash(pointer) if pointer.is_file() else None,
        **{k: report[k] for k in ("n_in", "kept", "kept_from_input", "filtered", "rejected", "added")},
    }
    mlflow.set_tracking_uri(cli_tracking_uri(Path(workspace), tracking_uri))
    return version_dataset(variant, Path(workspace), name, lineage)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
