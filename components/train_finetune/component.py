from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_finetune(
    selection: Input[Artifact],
    dataset: Input[Dataset],
    dataset_pointer: Input[Artifact],
    base_model: str,
    instruct_data: str,
    train_config: str,
    seed: int,
    model: Output[Model],
):
    """A surviving seed: stage 1 resumed from its decision checkpoint to the end, then stage 2.

    With a ``multinode:`` section of world size > 1 in ``train_config``, both
    stages run as one Kubeflow ``TrainJob`` (or ``PyTorchJob``) of N nodes x G
    GPUs that this step submits and waits for; the finetuned checkpoint is
    copied back from the shared PVC into ``model``.

    Args:
        selection: ``select_seeds``' output (the decision and the survivors' stage-1 state).
        dataset: The pretraining variant (the same one stage 1 started on).
        dataset_pointer: The variant's ``.dvc`` file; its hash is recorded as the model's lineage.
        base_model: LLaVA checkpoint directory stage 1 started from (its frozen weights).
        instruct_data: The fixed stage-2 instruction set (LLaVA json; images relative to its folder).
        train_config: Training YAML (optional ``multinode`` section).
        seed: A surviving seed (a loop item over ``select_seeds``' output).
        model: The finetuned checkpoint, as ``save_pretrained`` writes it.
    """
    from pathlib import Path

    from bettersynth.steps.train import train_finetune as run
    from bettersynth.versioning.dvc import pointer_hash

    dataset_hash = pointer_hash(Path(dataset_pointer.path))
    result = run(Path(selection.path), seed, Path(dataset.path), dataset_hash, Path(base_model), Path(instruct_data),
                 Path(train_config), Path(model.path),
                 dataset_remote=str(dataset_pointer.metadata.get("remote_url", "")),
                 dataset_name=str(dataset_pointer.metadata.get("variant", "")))
    model.metadata.update({**result, "dataset_hash": dataset_hash, "seed": seed, "kind": "finetune", "label": f"seed{seed}"})
