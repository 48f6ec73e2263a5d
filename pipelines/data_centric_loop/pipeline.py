"""The data-centric loop: filter → caption → version → train K seeds (early abort) → evaluate → soup → register.

The same pipeline runs locally (``kfp.local``, see ``bettersynth quickstart``)
and on a cluster (``bettersynth compile``); only the cluster profile, which
maps steps to node pools, differs.
"""

from typing import List, Sequence

from kfp import dsl
from kfp.dsl import Dataset

from bettersynth.platform.placement import ClusterProfile, place
from components.caption_dataset.component import caption_dataset
from components.filter_dataset.component import filter_dataset
from pipelines.stages import model_steps

PIPELINE_NAME = "bettersynth-data-centric-loop"


def build_pipeline(profile: ClusterProfile, soup_methods: Sequence[str] = ("uniform", "greedy"), eval_shards: int = 1):
    """The pipeline function for ``profile``; soups are unrolled per method at compile time.

    ``eval_shards`` > 1 splits each evaluation over that many pods, merged exactly.

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
        model_steps(
            profile, captioned.outputs["captioned"], workspace=workspace, variant=variant, base_model=base_model,
            instruct_data=instruct_data, train_config=train_config, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv,
            heldout_textvqa_dir=heldout_textvqa_dir, heldout_mmbench_tsv=heldout_mmbench_tsv, seeds=seeds,
            registered_model=registered_model, soup_methods=soup_methods, train_parallelism=2,
            eval_shards=eval_shards,
        )

    return data_centric_loop
