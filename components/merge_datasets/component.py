from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_datasets(shards: Input[List[Dataset]], source: str, merged: Output[Dataset]):
    """Merge processed shards back into one dataset, in source order, with summed accounting.

    Args:
        shards: The per-shard outputs of the last data step (collected from the ParallelFor).
        source: The dataset folder that was sharded (fixes the sample order).
        merged: One dataset folder: samples, images, outcomes, rejections and the summed report.
    """
    from pathlib import Path

    from bettersynth.steps.shards import merge_shards

    report = merge_shards([Path(s.path) for s in shards], Path(source), Path(merged.path))
    merged.metadata.update({k: report[k] for k in ("n_in", "kept", "filtered", "rejected", "added", "recipe_hash", "shards")})
