"""Pipeline stages shared by the pipelines: what happens to a cleaned dataset.

``model_steps`` adds, inside a ``@dsl.pipeline`` function: version the variant
with DVC → stage 1 for every seed up to the early-abort decision → select
seeds → finetune the survivors → evaluate → register → one soup per method
(unrolled at compile time: KFP cannot feed ``dsl.Collected`` into a second
``ParallelFor``) → evaluate → register → promote.
"""

from typing import Sequence

from kfp import dsl

from bettersynth.placement import ClusterProfile, place
from components.evaluate_model.component import evaluate_model
from components.promote_model.component import promote_model
from components.register_model.component import register_model
from components.select_seeds.component import select_seeds
from components.soup_models.component import soup_models
from components.train_align.component import train_align
from components.train_finetune.component import train_finetune
from components.version_dataset.component import version_dataset


def model_steps(
    profile: ClusterProfile,
    dataset,
    *,
    workspace,
    variant,
    base_model,
    instruct_data,
    train_config,
    textvqa_dir,
    mmbench_tsv,
    heldout_textvqa_dir,
    heldout_mmbench_tsv,
    seeds,
    registered_model,
    soup_methods: Sequence[str],
    train_parallelism: int = 2,
):
    """Add the model half of the loop for ``dataset`` (a Dataset channel); returns the promote task."""
    versioned = place(
        version_dataset(dataset=dataset, workspace=workspace, variant=variant), profile, "version-dataset"
    ).set_display_name("version-dataset")
    versioned.set_caching_options(False)  # it writes to the DVC remote: a side effect KFP can't see

    # The hash travels inside the pointer artifact, not as a string output: kfp.local
    # (2.17.0) hands a loop body the loop item in place of an upstream parameter output.
    registrations = []
    with dsl.ParallelFor(seeds, parallelism=train_parallelism) as seed:
        aligned = place(
            train_align(
                dataset=dataset, dataset_pointer=versioned.outputs["pointer"],
                base_model=base_model, train_config=train_config, seed=seed,
            ),
            profile, "train",
        ).set_display_name("train-align")
    selected = place(
        select_seeds(aligned=dsl.Collected(aligned.outputs["aligned"]), train_config=train_config),
        profile, "select-seeds",
    ).set_display_name("select-seeds")
    with dsl.ParallelFor(selected.outputs["Output"], parallelism=train_parallelism) as survivor:
        trained = place(
            train_finetune(
                selection=selected.outputs["selection"], dataset=dataset,
                dataset_pointer=versioned.outputs["pointer"], base_model=base_model,
                instruct_data=instruct_data, train_config=train_config, seed=survivor,
            ),
            profile, "train",
        ).set_display_name("train")
        registrations.append(_evaluate_and_register(
            profile, trained.outputs["model"], textvqa_dir, mmbench_tsv, registered_model, label=""
        ))

    for method in soup_methods:
        souped = place(
            soup_models(
                models=dsl.Collected(trained.outputs["model"]), method=method,
                heldout_textvqa_dir=heldout_textvqa_dir, heldout_mmbench_tsv=heldout_mmbench_tsv,
            ),
            profile, "soup",
        ).set_display_name(f"soup-{method}")
        registrations.append(_evaluate_and_register(
            profile, souped.outputs["soup"], textvqa_dir, mmbench_tsv, registered_model, label=f"-soup-{method}"
        ))

    promoted = place(promote_model(name=registered_model), profile, "promote-model").set_display_name("promote")
    for registration in registrations:
        promoted.after(registration)
    for task in registrations + [promoted]:
        task.set_caching_options(False)  # registry writes are side effects
    return promoted


def _evaluate_and_register(profile: ClusterProfile, model, textvqa_dir, mmbench_tsv, registered_model, label: str):
    scored = place(
        evaluate_model(model=model, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv), profile, "evaluate"
    ).set_display_name(f"evaluate{label}")
    return place(
        register_model(model=model, scores=scored.outputs["scores"], name=registered_model), profile, "register-model"
    ).set_display_name(f"register{label}")
