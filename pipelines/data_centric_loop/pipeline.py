"""The data-centric loop: filter → caption → version → train K seeds (early abort) → evaluate → soup → register.

The same pipeline runs locally (``kfp.local``, see ``bettersynth quickstart``)
and on a cluster (``bettersynth compile``); only the cluster profile, which
maps steps to node pools, differs.
"""

from typing import List, Sequence

from kfp import dsl
from kfp.dsl import Dataset

from bettersynth.placement import ClusterProfile, place
from components.caption_dataset.component import caption_dataset
from components.evaluate_model.component import evaluate_model
from components.filter_dataset.component import filter_dataset
from components.promote_model.component import promote_model
from components.register_model.component import register_model
from components.soup_models.component import soup_models
from components.select_seeds.component import select_seeds
from components.train_align.component import train_align
from components.train_finetune.component import train_finetune
from components.version_dataset.component import version_dataset

PIPELINE_NAME = "bettersynth-data-centric-loop"


def build_pipeline(profile: ClusterProfile, soup_methods: Sequence[str] = ("uniform", "greedy")):
    """The pipeline function for ``profile``; soups are unrolled per method at compile time.

    Why unrolled: a soup consumes the collected outputs of the training loop,
    and KFP cannot feed ``dsl.Collected`` into a second ``ParallelFor``.
    """

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__)
    def data_centric_loop(
        workspace: str,
        seed_dataset: str,
        filter_recipe: str,
        caption_recipe: str,
        model_root: str,
        base_model: str,
        instruct_data: str,
        train_config: str,
        textvqa_dir: str,
        mmbench_tsv: str,
        heldout_textvqa_dir: str,
        heldout_mmbench_tsv: str,
        variant: str = "quickstart",
        caption_fraction: float = 0.2,
        seeds: List[int] = [0, 1],
        registered_model: str = "bettersynth-vlm",
    ):
        seed_data = dsl.importer(artifact_uri=seed_dataset, artifact_class=Dataset, reimport=False)
        filtered = place(
            filter_dataset(dataset=seed_data.output, recipe=filter_recipe, model_root=model_root), profile, "filter"
        ).set_display_name("filter")
        captioned = place(
            caption_dataset(
                dataset=filtered.outputs["filtered"], recipe=caption_recipe, model_root=model_root,
                fraction=caption_fraction,
            ),
            profile, "caption",
        ).set_display_name("caption")
        versioned = place(
            version_dataset(dataset=captioned.outputs["captioned"], workspace=workspace, variant=variant),
            profile, "version-dataset",
        ).set_display_name("version-dataset")
        versioned.set_caching_options(False)  # it writes to the DVC remote: a side effect KFP can't see

        # The hash travels inside the pointer artifact, not as a string output: kfp.local
        # (2.17.0) hands a loop body the loop item in place of an upstream parameter output.
        # Stage 1 runs for every seed up to the early-abort decision; only survivors go on.
        registrations = []
        with dsl.ParallelFor(seeds, parallelism=2) as seed:
            aligned = place(
                train_align(
                    dataset=captioned.outputs["captioned"], dataset_pointer=versioned.outputs["pointer"],
                    base_model=base_model, train_config=train_config, seed=seed,
                ),
                profile, "train",
            ).set_display_name("train-align")
        selected = place(
            select_seeds(aligned=dsl.Collected(aligned.outputs["aligned"]), train_config=train_config),
            profile, "select-seeds",
        ).set_display_name("select-seeds")
        with dsl.ParallelFor(selected.outputs["Output"], parallelism=2) as survivor:
            trained = place(
                train_finetune(
                    selection=selected.outputs["selection"], dataset=captioned.outputs["captioned"],
                    dataset_pointer=versioned.outputs["pointer"], base_model=base_model,
                    instruct_data=instruct_data, train_config=train_config, seed=survivor,
                ),
                profile, "train",
            ).set_display_name("train")
            scored = place(
                evaluate_model(model=trained.outputs["model"], textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv),
                profile, "evaluate",
            ).set_display_name("evaluate")
            registrations.append(place(
                register_model(model=trained.outputs["model"], scores=scored.outputs["scores"], name=registered_model),
                profile, "register-model",
            ).set_display_name("register"))

        for method in soup_methods:
            souped = place(
                soup_models(
                    models=dsl.Collected(trained.outputs["model"]), method=method,
                    heldout_textvqa_dir=heldout_textvqa_dir, heldout_mmbench_tsv=heldout_mmbench_tsv,
                ),
                profile, "soup",
            ).set_display_name(f"soup-{method}")
            soup_scores = place(
                evaluate_model(model=souped.outputs["soup"], textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv),
                profile, "evaluate",
            ).set_display_name(f"evaluate-soup-{method}")
            registrations.append(place(
                register_model(model=souped.outputs["soup"], scores=soup_scores.outputs["scores"], name=registered_model),
                profile, "register-model",
            ).set_display_name(f"register-soup-{method}"))

        promoted = place(promote_model(name=registered_model), profile, "promote-model").set_display_name("promote")
        for registration in registrations:
            promoted.after(registration)
        for task in registrations + [promoted]:
            task.set_caching_options(False)  # registry writes are side effects

    return data_centric_loop
