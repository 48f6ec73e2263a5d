"""The evaluate step: TextVQA and MMBench (CircularEval) on one checkpoint, logged for audit.

A checkpoint is scored whole (``evaluate_model``) or in shards that fan out
over GPUs (``evaluate_model(..., shard_index=i, num_shards=k)``) and are joined
by ``merge_shards``; both end with the same files and MLflow record:
``<out>/<benchmark>/{metrics.json, predictions.jsonl, <table>.csv}`` and, for
MMBench, the server's submission file.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

import mlflow

from bettersynth.eval.benchmark import EvalResult, merge_results
from bettersynth.eval.generate import evaluate
from bettersynth.eval.mmbench import MMBench
from bettersynth.eval.shard import check_shard
from bettersynth.eval.textvqa import TextVQA
from bettersynth.tracking.runs import (
    EVALUATION_RUN,
    RUN_TYPE_TAG,
    model_title,
    pipeline_run_id,
    step_run,
)
from bettersynth.tracking.ui import describe_run, score_line

log = logging.getLogger(__name__)

TEXTVQA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
TEXTVQA_ANNOTATIONS = "TextVQA_0.5.1_val.json"
TEXTVQA_IMAGES = "train_images"  # TextVQA's val images ship in its train_images folder
SHARD_FILE = "shard.json"  # written beside a shard's results; the merge checks it
SubmissionFormat = Literal["xlsx", "tsv", "none"]  # MMBench server file: xlsx as it takes, tsv, or none
_METRIC_UNSAFE = re.compile(r"[^\w\-. :/]")


def load_benchmarks(textvqa_dir: Path, mmbench_tsv: Path, use_ocr: bool = True) -> dict:
    textvqa_dir = Path(textvqa_dir)
    return {
        "textvqa": TextVQA(
            textvqa_dir / TEXTVQA_QUESTIONS, textvqa_dir / TEXTVQA_ANNOTATIONS, textvqa_dir / TEXTVQA_IMAGES, use_ocr=use_ocr
        ),
        "mmbench": MMBench(Path(mmbench_tsv)),
    }


def run_benchmarks(model_dir: Path, benchmarks: dict, batch_size: int = 8, max_new_tokens: int = 16,
                   shard_index: int = 0, num_shards: int = 1) -> dict[str, EvalResult]:
    """Each benchmark's result for ``model_dir`` (one shard of each when ``num_shards > 1``)."""
    check_shard(shard_index, num_shards)
    return {name: evaluate(Path(model_dir), benchmark, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           shard_index=shard_index, num_shards=num_shards)
            for name, benchmark in benchmarks.items()}


def score_checkpoint(model_dir: Path, benchmarks: dict, out_dir: Path | None = None, batch_size: int = 8,
                     max_new_tokens: int = 16) -> dict[str, float]:
    """All benchmarks' metrics for ``model_dir``; per-question predictions go to ``out_dir/<bench>/``."""
    results = run_benchmarks(model_dir, benchmarks, batch_size, max_new_tokens)
    if out_dir is not None:
        for name, result in results.items():
            result.write(Path(out_dir) / name)
    return summary_metrics(results)


def summary_metrics(results: dict[str, EvalResult]) -> dict[str, float]:
    """Headline metrics plus question counts (a score means little without its denominator)."""
    metrics: dict[str, float] = {}
    for name, result in results.items():
        metrics |= result.metrics
        metrics[f"{name}_questions"] = float(len(result.records))
    return metrics


def table_metrics(results: dict[str, EvalResult]) -> dict[str, float]:
    """Each category row as MLflow metrics, e.g. ``mmbench_l2_category/reasoning/circular``."""
    metrics: dict[str, float] = {}
    for result in results.values():
        for table, rows in result.tables.items():
            for row in rows:
                key, *_ = row  # the first column names the row
                for column, value in row.items():
                    if column != key and isinstance(value, (int, float)) and not isinstance(value, bool):
                        name = _METRIC_UNSAFE.sub("_", f"{table}/{row[key]}/{column}")
                        metrics[name] = float(value)
    return metrics


def write_results(results: dict[str, EvalResult], benchmarks: dict, out_dir: Path,
                  submission_format: SubmissionFormat = "xlsx") -> None:
    """Result folders per benchmark, and MMBench's submission file when asked for."""
    if submission_format not in ("xlsx", "tsv", "none"):
        raise ValueError(f"submission_format: must be xlsx, tsv or none, got {submission_format!r}")
    for name, result in results.items():
        folder = result.write(Path(out_dir) / name)
        benchmark = benchmarks[name]
        if submission_format != "none" and isinstance(benchmark, MMBench):
            outputs = {record["question_id"]: record["output"] for record in result.records}
            benchmark.write_submission(folder / f"submission.{submission_format}", outputs)


def _log_results(results: dict[str, EvalResult], out_dir: Path, described: bool = True) -> dict[str, float]:
    """Log the metrics and files; inside a pipeline the run's description says the scores.

    Why a description: the MLflow runs table cuts run names at some 20 characters and shows
    no metric until a person picks it; the description is on the run's page and in the
    Description column of the saved view (``bettersynth.tracking.ui``).
    """
    metrics = summary_metrics(results)
    mlflow.log_metrics(metrics | table_metrics(results))
    mlflow.log_artifacts(str(out_dir), artifact_path="eval")
    if described and pipeline_run_id() and score_line(metrics):
        describe_run(mlflow.active_run().info.run_id, score_line(metrics))
    return metrics


def evaluate_model(
    model_dir: Path, textvqa_dir: Path, mmbench_tsv: Path, out_dir: Path, label: str, use_ocr: bool = True,
    batch_size: int = 8, max_new_tokens: int = 16, shard_index: int = 0, num_shards: int = 1,
    submission_format: SubmissionFormat = "xlsx",
) -> dict:
    """Score one checkpoint (or one shard of each benchmark) and log it to MLflow.

    Whole runs log metrics, per-category metrics, the category CSVs, the
    per-question predictions and the MMBench submission. A shard writes its
    results and ``shard.json`` for ``merge_shards``; its metrics cover the
    shard only and are logged under step ``eval-shard-<label>``.
    """
    check_shard(shard_index, num_shards)
    benchmarks = load_benchmarks(textvqa_dir, mmbench_tsv, use_ocr)
    sharded = num_shards > 1
    step = f"eval-shard-{label}-{shard_index}of{num_shards}" if sharded else f"evaluate-{label}"
    params = {"model": label, "textvqa.use_ocr": use_ocr, "batch_size": batch_size,
              "max_new_tokens": max_new_tokens, "shard_index": shard_index, "num_shards": num_shards}
    out_dir = Path(out_dir)
    title = [model_title(label), f"eval {shard_index + 1}/{num_shards}" if sharded else "eval"]
    with step_run(step, params=params, tags={RUN_TYPE_TAG: EVALUATION_RUN}, title=title) as run:
        results = run_benchmarks(model_dir, benchmarks, batch_size, max_new_tokens, shard_index, num_shards)
        write_results(results, benchmarks, out_dir, "none" if sharded else submission_format)
        if sharded:
            shard = {"label": label, "shard_index": shard_index, "num_shards": num_shards, "use_ocr": use_ocr,
                     "questions": {name: len(result.records) for name, result in results.items()}}
            (out_dir / SHARD_FILE).write_text(json.dumps(shard, indent=2) + "\n")
        metrics = _log_results(results, out_dir, described=not sharded)
    return {"metrics": metrics, "mlflow_run_id": run.info.run_id}


def read_shards(shard_dirs: list[Path]) -> tuple[dict[str, list[EvalResult]], dict]:
    """Shard results per benchmark; fails unless the folders are shards 0..k-1 of one evaluation."""
    if not shard_dirs:
        raise ValueError("shard_dirs: nothing to merge")
    infos = []
    for folder in map(Path, shard_dirs):
        path = folder / SHARD_FILE
        if not path.is_file():
            raise ValueError(f"{folder}: no {SHARD_FILE} (not the output of a sharded evaluate step)")
        infos.append((folder, json.loads(path.read_text())))
    first = infos[0][1]
    for folder, info in infos:
        for field in ("label", "num_shards", "use_ocr"):
            if info[field] != first[field]:
                raise ValueError(f"{folder / SHARD_FILE}: field {field!r} is {info[field]!r}, "
                                 f"other shards have {first[field]!r}")
    indices = sorted(info["shard_index"] for _, info in infos)
    if indices != list(range(first["num_shards"])):
        raise ValueError(f"shard_dirs: shard indices {indices}, expected 0..{first['num_shards'] - 1} once each")
    parts: dict[str, list[EvalResult]] = {}
    for folder, info in infos:
        for name in info["questions"]:
            parts.setdefault(name, []).append(EvalResult.read(folder / name, name))
    return parts, first


def merge_shards(
    shard_dirs: list[Path], textvqa_dir: Path, mmbench_tsv: Path, out_dir: Path, label: str | None = None,
    submission_format: SubmissionFormat = "xlsx",
) -> dict:
    """Join shard results into the unsharded result (same records, order, metrics) and log it.

    The benchmark files are read again (no images decoded for TextVQA) to check
    that every question was answered exactly once, and to write the submission.
    """
    parts, info = read_shards(list(shard_dirs))
    label = label or info["label"]
    benchmarks = load_benchmarks(textvqa_dir, mmbench_tsv, info["use_ocr"])
    if set(parts) != set(benchmarks):
        raise ValueError(f"shard_dirs: results for benchmarks {sorted(parts)}, expected {sorted(benchmarks)}")
    results = {name: merge_results(parts[name], order=benchmark.question_ids())
               for name, benchmark in benchmarks.items()}
    out_dir = Path(out_dir)
    params = {"model": label, "textvqa.use_ocr": info["use_ocr"], "num_shards": info["num_shards"]}
    with step_run(f"evaluate-{label}", params=params, tags={RUN_TYPE_TAG: EVALUATION_RUN}, title=[model_title(label), "eval"]) as run:
        write_results(results, benchmarks, out_dir, submission_format)
        metrics = _log_results(results, out_dir)
    log.info("merged %d shards of %s: %s", info["num_shards"], label, metrics)
    return {"metrics": metrics, "mlflow_run_id": run.info.run_id}


def caption_proxy(model_dir: Path, captions: Path, out_dir: Path, label: str, image_root: Path | None = None,
                  batch_size: int = 8, max_length: int = 2048) -> dict:
    """Held-out caption loss/perplexity of a stage-1 model, the cheap score for recipe search.

    ``captions`` is a LLaVA ``.json`` or Data-Juicer ``.jsonl`` caption set;
    images resolve against ``image_root`` (default: its folder). Per-sample
    losses go to ``out_dir/caption_loss.jsonl`` and the MLflow run.
    """
    from bettersynth.data.jsonl import write_jsonl
    from bettersynth.eval.caption_loss import heldout_caption_loss, load_caption_records

    captions = Path(captions)
    records = load_caption_records(captions)
    with step_run(f"caption-proxy-{label}", params={"model": label, "captions": str(captions)}) as run:
        result = heldout_caption_loss(model_dir, records, image_root or captions.parent, batch_size, max_length)
        out_dir = Path(out_dir)
        write_jsonl(out_dir / "caption_loss.jsonl", result.records)
        (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
        mlflow.log_metrics(result.metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="caption_proxy")
    return {"metrics": result.metrics, "mlflow_run_id": run.info.run_id}
