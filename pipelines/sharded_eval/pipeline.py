"""Sharded evaluation of one checkpoint: a ParallelFor over benchmark shards on the GPU pool, then a merge.

Why: 5,000 TextVQA questions and 4×1,164 MMBench rotations take hours of
greedy decoding on one GPU; shards cut wall time by ``num_shards`` and merge
to exactly the numbers an unsharded run reports (CircularEval groups never
straddle shards). Locally, ``kfp.local`` runs it with at most two shards at once.
"""

from kfp import dsl
from kfp.dsl import Model

from bettersynth.platform.placement import ClusterProfile, place
from components.evaluate_model.component import evaluate_model
from components.merge_eval.component import merge_eval

PIPELINE_NAME = "bettersynth-sharded-eval"


def build_pipeline(profile: ClusterProfile, num_shards: int = 4, parallelism: int | None = None):
    """The pipeline function for ``profile``, with ``num_shards`` fixed at compile time.

    ``parallelism`` caps shards running at once (default: all); the loop items
    and ``num_shards`` are compile-time constants, so every shard agrees on the split.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards: must be >= 1, got {num_shards}")
    if parallelism is not None and parallelism < 1:
        raise ValueError(f"parallelism: must be >= 1, got {parallelism}")

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__)
    def sharded_eval(
        model_dir: str,
        textvqa_dir: str,
        mmbench_tsv: str,
        label: str = "model",
        use_ocr: bool = True,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        submission_format: str = "xlsx",
    ):
        model = dsl.importer(artifact_uri=model_dir, artifact_class=Model, reimport=False)
        with dsl.ParallelFor(list(range(num_shards)), parallelism=parallelism or num_shards) as shard_index:
            shard = place(
                evaluate_model(
                    model=model.output, textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv, use_ocr=use_ocr,
                    batch_size=batch_size, max_new_tokens=max_new_tokens, shard_index=shard_index,
                    num_shards=num_shards, submission_format="none", label=label,
                ),
                profile, "evaluate",
            ).set_display_name("evaluate-shard")
        place(
            merge_eval(
                shards=dsl.Collected(shard.outputs["predictions"]), textvqa_dir=textvqa_dir, mmbench_tsv=mmbench_tsv,
                submission_format=submission_format, label=label,
            ),
            profile, "merge-eval",
        ).set_display_name("merge-eval")

    return sharded_eval
