"""The production pipeline: shard → (filter → caption) per shard in parallel → merge → version →
train K seeds (early abort) → evaluate → soup → evaluate → register → promote.

Same steps and components as the data-centric loop, with the data steps fanned
out over a ``dsl.ParallelFor`` so a large seed set scores and re-captions on
many GPU pods at once. Inputs are paths on the cluster's PVCs (datasets,
models, benchmarks, recipes); the cluster profile says which pool, image,
volumes and Secrets each step gets.

Example::

    bettersynth compile --pipeline production --profile k8s/profiles/gke.yaml --output production.yaml
"""

from typing import List, Sequence

from kfp import dsl
from kfp.dsl import Dataset

from bettersynth.placement import ClusterProfile, place
from components.caption_dataset.component import caption_dataset
from components.evaluate_model.component import evaluate_model
from components.filter_dataset.component import filter_dataset
from components.merge_datasets.component import merge_datasets
from components.plan_shards.component import plan_shards
from components.promote_model.component import promote_model
from components.register_model.component import register_model
from components.shard_dataset.component import shard_dataset
from components.soup_models.component import soup_models
from components.select_seeds.component import select_seeds
from components.train_align.component import train_align
from components.train_finetune.component import train_finetune
from components.version_dataset.component import version_dataset

PIPELINE_NAME = "bettersynth-production"
DATA_PIPELINE_NAME = "bettersynth-sharded-data"


def sharded_data_steps(
    profile: ClusterProfile, parallelism: int, seed_dataset, filter_recipe, caption_recipe, model_root,
    num_shards, caption_fraction, fingerprint_mode,
):
    """Add plan → ParallelFor(shard → filter → caption) → merge to the pipeline being defined; returns the merge task.

    Why one loop for both data steps: KFP cannot feed ``dsl.Collected`` into a
    second ``ParallelFor``, and a shard needs no other shard between filtering
    and captioning. Why the plan is the loop items: kfp.local (2.17.0) hands a
    loop body the loop item in place of an upstream parameter output, so the
    data and config hashes reach the shard steps inside the items.
    """
    plan = place(
        plan_shards(
            dataset=seed_dataset, num_shards=num_shards, filter_recipe=filter_recipe, caption_recipe=caption_recipe,
            fingerprint_mode=fingerprint_mode,
        ),
        profile, "plan-shards",
    ).set_display_name("plan-shards")
    plan.set_caching_options(False)  # it reads the source bytes: the fingerprint must be fresh
    with dsl.ParallelFor(plan.output, parallelism=parallelism) as shard:
        cut = place(shard_dataset(dataset=seed_dataset, shard=shard), profile, "shard-dataset").set_display_name("shard")
        filtered = place(
            filter_dataset(dataset=cut.outputs["shard_data"], recipe=filter_recipe, model_root=model_root), profile, "filter"
        ).set_display_name("filter")
        captioned = place(
            caption_dataset(
                dataset=filtered.outputs["filtered"], recipe=caption_recipe, model_root=model_root, fraction=caption_fraction,
            ),
            profile, "caption",
        ).set_display_name("caption")
    return place(
        merge_datasets(shards=dsl.Collected(captioned.outputs["captioned"]), source=seed_dataset), profile, "merge-datasets"
    ).set_display_name("merge")


def build_data_pipeline(profile: ClusterProfile, parallelism: int = 4):
    """Only the sharded data steps, as a pipeline: to re-run a data recipe, and for local tests."""

    @dsl.pipeline(name=DATA_PIPELINE_NAME, description="shard → filter → caption per shard → merge")
    def sharded_data(
        seed_dataset: str, filter_recipe: str, caption_recipe: str, model_root: str,
        num_shards: int = 8, caption_fraction: float = 0.2, fingerprint_mode: str = "content",
    ) -> Dataset:
        merged = sharded_data_steps(
            profile, parallelism, seed_dataset, filter_recipe, caption_recipe, model_root, num_shards, caption_fraction,
            fingerprint_mode,
        )
        return merged.outputs["merged"]

    return sharded_data


def build_pipeline(profile: ClusterProfile, soup_methods: Sequence[str] = ("uniform", "greedy"), parallelism: int = 8,
                   train_parallelism: int = 4):
    """The production pipeline for ``profile``.

    ``parallelism`` caps the shards processed at once (GPU pods in the scoring
    pool); ``train_parallelism`` the seeds trained at once. Soups are unrolled
    per method at compile time (KFP cannot feed ``dsl.Collected`` into a second
    ``ParallelFor``).
    """
    if parallelism < 1 or train_parallelism < 1:
        raise ValueError(f"parallelism and train_parallelism must be >= 1, got {parallelism}, {train_parallelism}")

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def production(
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
        variant: str = "production",
        num_shards: int = 8,
        caption_fraction: float = 0.2,
        fingerprint_mode: str = "content",
        seeds: List[int] = [0, 1, 2],
        registered_model: str = "bettersynth-vlm",
    ):
        merged = sharded_data_steps(
            profile, parallelism, seed_dataset, filter_recipe, caption_recipe, model_root, num_shards, caption_fraction,
            fingerprint_mode,
        )
        versioned = place(
            version_dataset(dataset=merged.outputs["merged"], workspace=workspace, variant=variant),
            profile, "version-dataset",
        ).set_display_name("version-dataset")
        versioned.set_caching_options(False)  # it writes to the DVC remote: a side effect KFP can't see

        # Stage 1 runs for every seed up to the early-abort decision; only survivors finetune
        # (the same training steps as the data-centric loop).
        registrations = []
        with dsl.ParallelFor(seeds, parallelism=train_parallelism) as seed:
            aligned = place(
                train_align(
                    dataset=merged.outputs["merged"], dataset_pointer=versioned.outputs["pointer"],
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
                    selection=selected.outputs["selection"], dataset=merged.outputs["merged"],
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

    return production
