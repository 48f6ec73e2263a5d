from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_model(
    dataset: Input[Dataset],
    dataset_pointer: Input[Artifact],
    base_model: str,
    instruct_data: str,
    train_config: str,
    seed: int,
    model: Output[Model],
):
    """Two-stage LLaVA training: projector alignment on the variant, then instruction finetuning.

    Args:
        dataset: The pretraining variant (Data-Juicer jsonl + images).
        dataset_pointer: The variant's ``.dvc`` file; its hash is recorded as the model's lineage.
        base_model: LLaVA checkpoint directory to start from (vision tower + projector + LLM).
        instruct_data: The fixed stage-2 instruction set (LLaVA json; images relative to its folder).
        train_config: YAML with the ``align`` and ``finetune`` stage settings.
        seed: Training seed (data order and initialisation of nothing else).
        model: The finetuned checkpoint, as ``save_pretrained`` writes it.
    """
    from pathlib import Path

    from bettersynth.steps.train import train_model as run
    from bettersynth.versioning import pointer_hash

    dataset_hash = pointer_hash(Path(dataset_pointer.path))
    result = run(Path(dataset.path), dataset_hash, Path(base_model), Path(instruct_data), Path(train_config), seed, Path(model.path),
                 dataset_remote=str(dataset_pointer.metadata.get("remote_url", "")),
                 dataset_name=str(dataset_pointer.metadata.get("variant", "")))
    model.metadata.update({**result, "dataset_hash": dataset_hash, "seed": seed, "kind": "finetune", "label": f"seed{seed}"})
