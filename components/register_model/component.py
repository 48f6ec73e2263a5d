from kfp import dsl
from kfp.dsl import Input, Metrics, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(model: Input[Model], scores: Input[Metrics], name: str) -> str:
    """Register a checkpoint in the MLflow Model Registry with its scores and lineage in tags.

    Args:
        model: A finetuned or soup checkpoint (its metadata carries the MLflow run and dataset hash).
        scores: Its evaluation metrics.
        name: Registered model name.

    Returns:
        The new model version.
    """
    from bettersynth.steps.register import register_version

    meta = model.metadata
    tags = {
        "kind": str(meta.get("kind", "finetune")),
        "dataset.hash": str(meta.get("dataset_hash", "")),
        "train.seed": str(meta.get("seed", "")),
        "soup.method": str(meta.get("method", "")),
        "soup.ingredients": ",".join(meta.get("ingredients", [])),
    }
    metrics = {k: float(v) for k, v in scores.metadata.items() if isinstance(v, (int, float))}
    return register_version(name, meta["mlflow_run_id"], metrics, {k: v for k, v in tags.items() if v})
