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
    weights: List[float] = [],
):
    """Average finetuned checkpoints into a model soup (uniform, weighted, greedy, maximum).

    Args:
        models: The finetuned checkpoints (one architecture).
        method: A registered soup method: uniform, greedy, maximum or weighted.
        heldout_textvqa_dir: Held-out TextVQA-format split that ranks ingredients and greedy candidates
            (empty, with ``heldout_mmbench_tsv`` empty too, for an unscored uniform or weighted soup).
        heldout_mmbench_tsv: Held-out MMBench-format split, likewise.
        soup: The soup checkpoint; its metadata carries the lineage the registry step records.
        accept_if: Greedy acceptance: ``ge`` (paper) or ``gt`` (reference code).
        weights: One weight per model, for ``weighted`` only.
    """
    from pathlib import Path

    from bettersynth.steps.soup import soup_models as run

    runs = [m.metadata.get("mlflow_run_id", m.uri) for m in models]
    result = run(
        [Path(m.path) for m in models], runs, method, Path(soup.path),
        Path(heldout_textvqa_dir) if heldout_textvqa_dir else None,
        Path(heldout_mmbench_tsv) if heldout_mmbench_tsv else None,
        accept_if, list(weights) or None,
    )
    datasets = sorted({m.metadata.get("dataset_hash", "") for m in models})
    soup.metadata.update({
        **result, "kind": "soup", "method": method, "label": f"soup-{method}", "ingredients": runs, "dataset_hash": ",".join(datasets),
    })
