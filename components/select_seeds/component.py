from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_seeds(aligned: Input[List[Model]], train_config: str, selection: Output[Artifact]) -> List[int]:
    """Early abort: keep the seeds whose stage-1 loss is within the margin of the best.

    Args:
        aligned: Every seed's ``train_align`` output (collected from the loop).
        train_config: Training YAML; its ``seed_selection`` section is the policy.
        selection: The decision (``seed_selection.json``) and the survivors' stage-1 state.

    Returns:
        The surviving seeds, best first (the items of the stage-2 loop).
    """
    from pathlib import Path

    from bettersynth.steps.train import select_seeds as run

    survivors = run([Path(a.path) for a in aligned], Path(train_config), Path(selection.path))
    selection.metadata["survivors"] = survivors
    return survivors
