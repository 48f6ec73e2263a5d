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
):
    """Score a checkpoint on TextVQA (VQA accuracy) and MMBench (CircularEval).

    Args:
        model: The checkpoint directory.
        textvqa_dir: Folder with ``llava_textvqa_val_v051_ocr.jsonl``, ``TextVQA_0.5.1_val.json`` and ``train_images/``.
        mmbench_tsv: An MMBench TSV (e.g. ``mmbench_dev_20230712.tsv``).
        scores: Summary metrics (percent).
        predictions: Per-question predictions and category tables, for audit.
        use_ocr: Put TextVQA's OCR tokens in the prompt, as LLaVA and Mini-Gemini report.
        batch_size: Questions per generation batch.
    """
    from pathlib import Path

    from bettersynth.steps.evaluate import evaluate_model as run

    label = str(model.metadata.get("label", "model"))
    result = run(Path(model.path), Path(textvqa_dir), Path(mmbench_tsv), Path(predictions.path), label, use_ocr, batch_size)
    for name, value in result["metrics"].items():
        scores.log_metric(name, value)
    scores.metadata.update({"eval_run_id": result["mlflow_run_id"], "label": label})
