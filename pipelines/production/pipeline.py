"""The production pipeline: shard → (filter → caption) per shard in parallel → merge → version →
train K seeds (early abort) → evaluate (sharded) → soup → evaluate (sharded) → register → promote.

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

from bettersynth.platform.placement import ClusterProfile, place
from components.caption_dataset.component import caption_dataset
from components.filter_dataset.component import filter_dataset
from components.merge_datasets.component import merge_datasets
from components.plan_shards.component import plan_shards
from components.shard_dataset.component import shard_dataset
from pipelines.stages import model_steps

PIPELINE_NAME = "bettersynth-production"
DATA_PIPELINE_NAME = "bettersynth-sharded-data"


def sharded_data_steps(
    profile: ClusterProfile, parallelism: int, seed_dataset, filter_recipe, caption_recipe, model_root,
    num_shards, caption_fraction, fingerprint_mode, workspace="",
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
            fingerprint_mode=fingerprint_mode, workspace=workspace,
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
        num_shards: int = 8, caption_fraction: float = 0.2, fingerprint_mode: str = "content", workspace: str = "",
    ) -> Dataset:
        merged = sharded_data_steps(
            profile, parallelism, seed_dataset, filter_recipe, caption_recipe, model_root, num_shards, caption_fraction,
            fingerprint_mode, workspace,
        )
        return merged.outputs["merged"]

    return sharded_data


def build_pipeline(profile: ClusterProfile, soup_methods: Sequence[str] = ("uniform", "greedy"), parallelism: int = 8,
                   train_parallelism: int = 4, eval_shards: int = 4):
    """The production pipeline for ``profile``.

    ``parallelism`` caps the shards processed at once (GPU pods in the scoring
    pool); ``train_parallelism`` the seeds trained at once; ``eval_shards`` the
    GPU pods each checkpoint's evaluation is split over (merged exactly). Soups are unrolled
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
            fingerprint_mode, workspace,
        )
        model_steps(
            profile, merged.outputs["merged"], workspace=workspace, variant=variant, base_model=base_model,
            instruct_data=instruct_data, train_config=train_config, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv,
            heldout_textvqa_dir=heldout_textvqa_dir, heldout_mmbench_tsv=heldout_mmbench_tsv, seeds=seeds,
            registered_model=registered_model, soup_methods=soup_methods, train_parallelism=train_parallelism,
            eval_shards=eval_shards,
        )

    return production
