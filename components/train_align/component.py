from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_align(
    dataset: Input[Dataset],
    dataset_pointer: Input[Artifact],
    base_model: str,
    train_config: str,
    seed: int,
    aligned: Output[Model],
):
    """Stage 1 (projector alignment) of one seed, up to the early-abort decision step.

    With a ``multinode:`` section of world size > 1 in ``train_config``, the
    stage runs as a Kubeflow ``TrainJob`` (or ``PyTorchJob``) of N nodes x G
    GPUs that this step submits and waits for (its service account needs
    create/get/delete on the job kind); the result lands here all the same.

    Args:
        dataset: The pretraining variant (Data-Juicer jsonl + images).
        dataset_pointer: The variant's ``.dvc`` file; its hash is recorded as lineage.
        base_model: LLaVA checkpoint directory to start from.
        train_config: Training YAML (stages, ``seed_selection``, optional ``multinode``).
        seed: Training seed.
        aligned: The loss curve and the resumable checkpoint at the decision step.
    """
    from pathlib import Path

    from bettersynth.steps.train import train_align as run
    from bettersynth.versioning.dvc import pointer_hash

    dataset_hash = pointer_hash(Path(dataset_pointer.path))
    result = run(Path(dataset.path), dataset_hash, Path(base_model), Path(train_config), seed, Path(aligned.path),
                 dataset_remote=str(dataset_pointer.metadata.get("remote_url", "")),
                 dataset_name=str(dataset_pointer.metadata.get("variant", "")))
    aligned.metadata.update({**result, "dataset_hash": dataset_hash, "kind": "align"})
