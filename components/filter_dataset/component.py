from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def filter_dataset(
    dataset: Input[Dataset],
    recipe: str,
    model_root: str,
    filtered: Output[Dataset],
    batch_size: int = 32,
):
    """Score and filter a Data-Juicer dataset with a recipe of filter ops.

    Args:
        dataset: Directory with ``samples.jsonl`` and the images it names.
        recipe: Path of the recipe YAML (Data-Juicer op names and parameters).
        model_root: Directory that relative model paths in the recipe resolve against.
        filtered: Kept samples, their images, and ``outcomes.jsonl`` / ``rejected.jsonl`` for every input sample.
        batch_size: Samples per model batch.
    """
    from pathlib import Path

    from bettersynth.steps.process import process_dataset

    summary = process_dataset(
        "filter", Path(dataset.path), Path(recipe), Path(filtered.path), Path(model_root), batch_size=batch_size
    )
    filtered.metadata.update({k: summary[k] for k in ("n_in", "kept", "filtered", "rejected", "recipe_hash", "mlflow_run_id")})
