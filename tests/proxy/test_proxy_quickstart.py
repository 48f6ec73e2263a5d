"""What ``bettersynth quickstart`` (``make quickstart``) must show, end to end: in its world the similarity
filter trains better models, every model clears the trivial baselines, and ``champion`` goes to a winner
by a margin.

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

# Measured through the pipeline (fresh quickstart, 334 s on 2 cores): seed means similarity 15.00 / 31.00
# against no filter 12.75 / 28.00 (TextVQA / MMBench circular), champion similarity seed1 by 3.00 points.
# Both gains hold, but TextVQA stays under its floor (23.0, answering "unanswerable") and its gain is under
# the 5 points asked, so this fails until the models read the sign. The gains asked are about half of what
# stage 1 alone showed on seed 0 (similarity 44.0 / 28.5 against 7.5 / 26.0 with 1-3 OCR tokens a prompt).
TEXTVQA_GAIN = 5.0
MMBENCH_GAIN = 2.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the quickstart's models gain on both benchmarks but do not yet read the sign: TextVQA "
                                       "stays under its floor (numbers above); strict: it fails the day it passes")
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
