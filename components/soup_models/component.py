from typing import List

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def soup_models(
    models: Input[List[Model]],
    method: str,
    heldout_textvqa_dir: str,
    heldout_mmbench_tsv: str,
    soup: Output[Model],
    accept_if: str = "ge",
):
    """Average finetuned checkpoints into a model soup (uniform, greedy, maximum).

    Args:
        models: The finetuned checkpoints (one architecture).
        method: A registered soup method: uniform, greedy, maximum or weighted.
        heldout_textvqa_dir: Held-out TextVQA-format split that ranks ingredients and greedy candidates.
        heldout_mmbench_tsv: Held-out MMBench-format split, likewise.
        soup: The soup checkpoint.
        accept_if: Greedy acceptance: ``ge`` (paper) or ``gt`` (reference code).
    """
    from pathlib import Path

    from bettersynth.steps.soup import soup_models as run

    runs = [m.metadata.get("mlflow_run_id", m.uri) for m in models]
    result = run(
        [Path(m.path) for m in models], runs, method, Path(soup.path),
        Path(heldout_textvqa_dir), Path(heldout_mmbench_tsv), accept_if,
    )
    datasets = sorted({m.metadata.get("dataset_hash", "") for m in models})
    soup.metadata.update({
        **result, "kind": "soup", "method": method, "label": f"soup-{method}", "ingredients": runs, "dataset_hash": ",".join(datasets),
    })
