from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_eval(
    shards: Input[List[Artifact]],
    textvqa_dir: str,
    mmbench_tsv: str,
    scores: Output[Metrics],
    predictions: Output[Artifact],
    submission_format: str = "xlsx",
    label: str = "",
):
    """Join the shards of a sharded ``evaluate_model`` into the unsharded result.

    Args:
        shards: The ``predictions`` outputs of every shard (0..k-1, each once).
        textvqa_dir: The TextVQA folder the shards were scored on (checks every question was answered).
        mmbench_tsv: The MMBench TSV the shards were scored on (and the submission's rows).
        scores: Summary metrics (percent) over all questions, as an unsharded run logs them.
        predictions: Merged per-question records, category tables and the MMBench submission.
        submission_format: MMBench server file: ``xlsx`` (what the server takes), ``tsv`` or ``none``.
        label: Name of the model in MLflow; defaults to the label the shards recorded.
    """
    from pathlib import Path

    from bettersynth.steps.evaluate import merge_shards

    result = merge_shards(
        [Path(shard.path) for shard in shards], Path(textvqa_dir), Path(mmbench_tsv), Path(predictions.path),
        label or None, submission_format,
    )
    for name, value in result["metrics"].items():
        scores.log_metric(name, value)
    scores.metadata.update({"eval_run_id": result["mlflow_run_id"]})
