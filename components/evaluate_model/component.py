from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    textvqa_dir: str,
    mmbench_tsv: str,
    scores: Output[Metrics],
    predictions: Output[Artifact],
    use_ocr: bool = True,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    shard_index: int = 0,
    num_shards: int = 1,
    submission_format: str = "xlsx",
    label: str = "",
):
    """Score a checkpoint on TextVQA (VQA accuracy) and MMBench (CircularEval), whole or one shard.

    Args:
        model: The checkpoint directory.
        textvqa_dir: Folder with ``llava_textvqa_val_v051_ocr.jsonl``, ``TextVQA_0.5.1_val.json`` and ``train_images/``.
        mmbench_tsv: An MMBench TSV (e.g. ``mmbench_dev_20230712.tsv``).
        scores: Summary metrics (percent) and question counts; a shard's cover that shard only.
        predictions: Per-question records, category tables and the MMBench submission, for audit.
        use_ocr: Put TextVQA's OCR tokens in the prompt, as LLaVA and Mini-Gemini report.
        batch_size: Questions per generation batch.
        max_new_tokens: Greedy decoding budget per answer.
        shard_index: Which shard to score (0-based); merge the shards with ``merge_eval``.
        num_shards: Shards the benchmarks are split into (1: score everything here).
        submission_format: MMBench server file: ``xlsx`` (what the server takes), ``tsv`` or ``none``.
        label: Name of the model in MLflow; defaults to the model artifact's ``label`` metadata.
    """
    from pathlib import Path

    from bettersynth.steps.evaluate import evaluate_model as run

    label = label or str(model.metadata.get("label", "model"))
    result = run(
        Path(model.path), Path(textvqa_dir), Path(mmbench_tsv), Path(predictions.path), label, use_ocr, batch_size,
        max_new_tokens=max_new_tokens, shard_index=shard_index, num_shards=num_shards,
        submission_format=submission_format,
    )
    for name, value in result["metrics"].items():
        scores.log_metric(name, value)
    scores.metadata.update({"eval_run_id": result["mlflow_run_id"], "label": label})
    predictions.metadata.update({"label": label, "shard_index": shard_index, "num_shards": num_shards})
