from kfp import dsl
from kfp.dsl import Input, Metrics, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(model: Input[Model], scores: Input[Metrics], name: str) -> str:
    """Register a checkpoint in the MLflow Model Registry with its scores and lineage in tags.

    A soup's version also carries its method and, as aligned JSON lists, its
    ingredients (run ids), their held-out scores and their weights.

    Args:
        model: A finetuned or soup checkpoint (its metadata carries the MLflow run and dataset hash).
        scores: Its evaluation metrics.
        name: Registered model name.

    Returns:
        The new model version.
    """
    from bettersynth.steps.register import register_version, soup_tags

    meta = model.metadata
    seed = meta.get("seed", "")
    tags = {
        "kind": str(meta.get("kind", "finetune")),
        "dataset.hash": str(meta.get("dataset_hash", "")),
        "train.seed": str(int(seed)) if isinstance(seed, (int, float)) else str(seed),  # metadata turns 0 into 0.0
    }
    if meta.get("kind") == "soup":
        tags |= soup_tags(meta["method"], meta["ingredients"], meta.get("ingredient_scores"), meta["weights"])
    metrics = {k: float(v) for k, v in scores.metadata.items() if isinstance(v, (int, float))}
    return register_version(name, meta["mlflow_run_id"], metrics, {k: v for k, v in tags.items() if v})
