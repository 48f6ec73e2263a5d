"""The evaluate step: TextVQA and MMBench (CircularEval) on one checkpoint, logged for audit."""

from __future__ import annotations

from pathlib import Path

import mlflow

from bettersynth.eval.generate import evaluate
from bettersynth.eval.mmbench import MMBench
from bettersynth.eval.textvqa import TextVQA
from bettersynth.tracking import step_run

TEXTVQA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
TEXTVQA_ANNOTATIONS = "TextVQA_0.5.1_val.json"
TEXTVQA_IMAGES = "train_images"  # TextVQA's val images ship in its train_images folder


def load_benchmarks(textvqa_dir: Path, mmbench_tsv: Path, use_ocr: bool = True) -> dict:
    textvqa_dir = Path(textvqa_dir)
    return {
        "textvqa": TextVQA(
            textvqa_dir / TEXTVQA_QUESTIONS, textvqa_dir / TEXTVQA_ANNOTATIONS, textvqa_dir / TEXTVQA_IMAGES, use_ocr=use_ocr
        ),
        "mmbench": MMBench(Path(mmbench_tsv)),
    }


def score_checkpoint(model_dir: Path, benchmarks: dict, out_dir: Path | None = None, batch_size: int = 8) -> dict[str, float]:
    """All benchmarks' metrics for ``model_dir``; per-question predictions go to ``out_dir/<bench>/``."""
    metrics: dict[str, float] = {}
    for name, benchmark in benchmarks.items():
        result = evaluate(Path(model_dir), benchmark, batch_size=batch_size)
        if out_dir is not None:
            result.write(Path(out_dir) / name)
        metrics |= result.metrics
    return metrics


def evaluate_model(
    model_dir: Path, textvqa_dir: Path, mmbench_tsv: Path, out_dir: Path, label: str, use_ocr: bool = True, batch_size: int = 8
) -> dict:
    """Score one checkpoint; metrics, predictions and category tables go to its MLflow run."""
    benchmarks = load_benchmarks(textvqa_dir, mmbench_tsv, use_ocr)
    with step_run(f"evaluate-{label}", params={"model": label, "textvqa.use_ocr": use_ocr}) as run:
        metrics = score_checkpoint(model_dir, benchmarks, out_dir, batch_size)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="eval")
    return {"metrics": metrics, "mlflow_run_id": run.info.run_id}
