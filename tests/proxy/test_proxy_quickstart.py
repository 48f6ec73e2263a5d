"""What ``bettersynth quickstart --proxy-world`` must show before it becomes ``make quickstart``, end to end: in its world the similarity filter trains better models,
every model clears the trivial baselines, and ``champion`` goes to a winner by a margin.

The whole quickstart (world, scorer and LM, two recipes x two seeds through ``kfp.local``) takes
minutes, hence ``slow``; ``test_proxy_quickstart_claim.py`` checks the same direction on a reduced
world inside the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth_demo.proxy.experiment import run_proxy
from bettersynth_demo.proxy.quickstart import (
    below_floor,
    champion_report,
    format_quickstart,
    quickstart_config,
)

# Measured on seed 0 with the preset's stage 2 (direct train and eval calls, not yet the pipeline):
# similarity 47.0 / 30.0 against no filter 37.0 / 25.5 (TextVQA / MMBench circular). The test asks for
# about half of each gain. The floor check is the acceptance criterion: TextVQA at this stage 2
# stayed under the random-OCR-token floor (61), so it fails until the preset lifts TextVQA past it.
# Through the pipeline (``bettersynth quickstart``, fresh workspace, 11 min) it failed: seed means
# similarity 44.50 / 28.25 against 42.50 / 27.75, TextVQA seeds 29.0-56.0, champion no-filter seed0.
TEXTVQA_GAIN = 5.0
MMBENCH_GAIN = 2.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the proxy-world quickstart's models do not yet show the filter's gain or clear "
                                       "the TextVQA floor (numbers above); strict: passing means make it the default")
def test_quickstart_filter_wins_by_a_margin(tmp_path: Path) -> None:
    config = quickstart_config(tmp_path / "ws")
    result = run_proxy(config)
    champion = champion_report(result, config.registered_model)
    print("\n" + format_quickstart(result, champion))
    rows = {row.recipe: row for row in result["rows"]}
    clean, noisy = rows["similarity"], rows["no-filter"]
    assert clean.labels["truthful"] / clean.labels["samples"] > 2 * noisy.labels["truthful"] / noisy.labels["samples"]
    assert clean.mean("textvqa") - noisy.mean("textvqa") >= TEXTVQA_GAIN
    assert clean.mean("mmbench_circular") - noisy.mean("mmbench_circular") >= MMBENCH_GAIN
    assert below_floor(result) == []
    assert champion is not None and champion.recipe == "similarity" and champion.margin >= champion.needed
