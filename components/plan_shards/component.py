from typing import List

from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_shards(
    dataset: str,
    num_shards: int,
    filter_recipe: str,
    caption_recipe: str,
    fingerprint_mode: str = "content",
    workspace: str = "",
) -> List[dict]:
    """Cut a dataset into contiguous line blocks and fingerprint its bytes and recipes.

    The plan is the ParallelFor's items: each shard spec carries the data and
    config hashes, so KFP's cache key for every shard step changes exactly when
    the input bytes or the op config do. Run it uncached.

    Args:
        dataset: Folder with ``samples.jsonl`` and its images (on the data PVC).
        num_shards: Shards wanted; fewer when the dataset has fewer lines.
        filter_recipe: Path of the filter recipe (hashed into the plan).
        caption_recipe: Path of the caption recipe (hashed into the plan).
        fingerprint_mode: ``content`` hashes image bytes; ``stat`` only names, sizes and mtimes.
        workspace: The DVC project root on a volume; its ``.cache/file_hashes.sqlite`` remembers
            each image's hash, so a later plan reads only new or changed images. Empty: hash all.

    Returns:
        One dict per shard: index, start, stop, data_hash, config_hash.
    """
    from pathlib import Path

    from bettersynth.steps.shards import plan_shards as run

    if fingerprint_mode not in ("content", "stat"):
        raise ValueError(f"fingerprint_mode must be 'content' or 'stat', got {fingerprint_mode!r}")
    cache = Path(workspace) / ".cache" / "file_hashes.sqlite" if workspace else None
    return run(Path(dataset), num_shards, [Path(filter_recipe), Path(caption_recipe)], fingerprint_mode, cache)
