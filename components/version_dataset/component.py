from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def version_dataset(
    dataset: Input[Dataset],
    workspace: str,
    variant: str,
    pointer: Output[Artifact],
) -> NamedTuple("Outputs", dataset_hash=str):
    """Version a dataset variant with DVC (add + push to the default remote).

    Args:
        dataset: The variant's directory.
        workspace: The DVC project (a clone of the data repo, or a volume) holding ``data/variants/``.
        variant: Name of the variant, e.g. ``sim0.28-recap``.
        pointer: The ``.dvc`` file naming the variant's bytes, kept with the run for pod-less checkouts.

    Returns:
        dataset_hash: DVC's directory hash of exactly these bytes.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from bettersynth.steps.version import version_dataset as run

    lineage = {k: dataset.metadata[k] for k in ("recipe_hash", "n_in", "kept", "filtered", "rejected") if k in dataset.metadata}
    result = run(Path(dataset.path), Path(workspace), variant, lineage)
    shutil.copyfile(result["pointer"], pointer.path)
    pointer.metadata.update(result)
    return namedtuple("Outputs", ["dataset_hash"])(result["dataset_hash"])
