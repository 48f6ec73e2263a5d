from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def caption_dataset(
    dataset: Input[Dataset],
    recipe: str,
    model_root: str,
    captioned: Output[Dataset],
    fraction: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
):
    """Re-caption a seeded fraction of a dataset with a recipe of mapper ops (e.g. image_captioning_mapper).

    Args:
        dataset: Directory with ``samples.jsonl`` and its images.
        recipe: Path of the recipe YAML.
        model_root: Directory that relative model paths in the recipe resolve against.
        captioned: The dataset after captioning (originals kept or replaced as the recipe says).
        fraction: Share of samples the recipe is applied to; the rest pass through.
        seed: Seeds both the subset choice and caption sampling.
        batch_size: Samples per generation batch.
    """
    from pathlib import Path

    from bettersynth.steps.process import process_dataset

    summary = process_dataset(
        "caption", Path(dataset.path), Path(recipe), Path(captioned.path), Path(model_root),
        fraction=fraction, seed=seed, batch_size=batch_size,
    )
    captioned.metadata.update({k: summary[k] for k in ("n_in", "kept", "filtered", "rejected", "added", "recipe_hash", "mlflow_run_id")})
