"""Pipeline stages shared by the pipelines: what happens to a cleaned dataset.

``model_steps`` adds, inside a ``@dsl.pipeline`` function: version the variant
with DVC → stage 1 for every seed up to the early-abort decision → select
seeds → finetune the survivors → evaluate → register → one soup per method
(unrolled at compile time: KFP cannot feed ``dsl.Collected`` into a second
``ParallelFor``) → evaluate → register → promote.

With ``eval_shards > 1`` every evaluation fans out over a nested
``ParallelFor`` of benchmark shards and ``merge_eval`` joins them into exactly
the unsharded numbers (see ``pipelines/sharded_eval``).
"""

from typing import Sequence

from kfp import dsl

from bettersynth.platform.placement import ClusterProfile, place
from components.evaluate_model.component import evaluate_model
from components.merge_eval.component import merge_eval
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
    eval_shards: int = 1,
):
    """Add the model half of the loop for ``dataset`` (a Dataset channel); returns the promote task.

    ``eval_shards`` (compile time) splits every evaluation into that many GPU pods.
    """
    if eval_shards < 1:
        raise ValueError(f"eval_shards: must be >= 1, got {eval_shards}")
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
            profile, trained.outputs["model"], textvqa_dir, mmbench_tsv, registered_model, label="", eval_shards=eval_shards
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
            profile, souped.outputs["soup"], textvqa_dir, mmbench_tsv, registered_model, label=f"-soup-{method}",
            eval_shards=eval_shards,
        ))

    promoted = place(promote_model(name=registered_model), profile, "promote-model").set_display_name("promote")
    for registration in registrations:
        promoted.after(registration)
    for task in registrations + [promoted]:
        task.set_caching_options(False)  # registry writes are side effects
    return promoted


def _evaluate_and_register(
    profile: ClusterProfile, model, textvqa_dir, mmbench_tsv, registered_model, label: str, eval_shards: int = 1
):
    scores = _evaluate(profile, model, textvqa_dir, mmbench_tsv, label, eval_shards)
    return place(
        register_model(model=model, scores=scores, name=registered_model), profile, "register-model"
    ).set_display_name(f"register{label}")


def _evaluate(profile: ClusterProfile, model, textvqa_dir, mmbench_tsv, label: str, eval_shards: int):
    """The scores channel for ``model``: one evaluate task, or ``eval_shards`` of them and a merge.

    The shard indices are a compile-time list, so every shard agrees on the
    split; the model reaches the nested loop as an artifact (kfp.local 2.17.0
    resolves only artifacts, not parameters, from an enclosing loop correctly).
    """
    if eval_shards == 1:
        scored = place(
            evaluate_model(model=model, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv), profile, "evaluate"
        ).set_display_name(f"evaluate{label}")
        return scored.outputs["scores"]
    with dsl.ParallelFor(list(range(eval_shards)), parallelism=eval_shards) as shard_index:
        shard = place(
            evaluate_model(
                model=model, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv, shard_index=shard_index,
                num_shards=eval_shards, submission_format="none",
            ),
            profile, "evaluate",
        ).set_display_name(f"evaluate{label}-shard")
    merged = place(
        merge_eval(shards=dsl.Collected(shard.outputs["predictions"]), textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv),
        profile, "merge-eval",
    ).set_display_name(f"merge-eval{label}")
    return merged.outputs["scores"]
