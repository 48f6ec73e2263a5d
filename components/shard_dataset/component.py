from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard_dataset(dataset: str, shard: dict, shard_data: Output[Dataset]):
    """Cut one shard (a block of lines and the images they name) out of a dataset folder.

    Reads only the source folder (on the data PVC), so each shard pod moves its
    own share of the images, never the whole dataset.

    Args:
        dataset: Folder with ``samples.jsonl`` and its images.
        shard: One item of ``plan_shards``' plan (index, start, stop, hashes).
        shard_data: The shard as a dataset folder.
    """
    from pathlib import Path

    from bettersynth.steps.shards import cut_shard

    lines = cut_shard(Path(dataset), shard, Path(shard_data.path))
    shard_data.metadata.update({"shard": int(shard["index"]), "lines": lines, "data_hash": shard["data_hash"]})
