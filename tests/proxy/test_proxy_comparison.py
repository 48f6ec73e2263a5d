"""The point of the proxy world, measured: cleaner data trains a better model.

Runs the real pipeline (``kfp.local``) for two recipes on the default proxy
world (1,280 seed pairs, the reduced scale of a 400k-pair seed set): about 10
minutes on 2 idle CPU cores, hence ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth.demo.proxy.experiment import ProxyConfig, format_table, run_proxy

# Chosen from repeated runs (see the test's docstring): the two-seed means differed by
# +6.5 through the pipeline, and by +5.6 to +11.3 per seed over six training runs.
MMBENCH_MARGIN = 3.0
# Through the pipeline, greedy soups of two seeds sat -0.5 to +0.7 from their ingredients'
# mean and uniform soups -1.7 to -1.2; uniform soups of 2 and of 4 finetunes (seeds 0, 2, 3, 4), -2.7
# to +1.1. The tolerance bounds the damage a soup may do (a soup averaging
# mismatched tensors scores near chance, 0-10 on circular MMBench).
SOUP_TOLERANCE = 3.0


@pytest.mark.slow
def test_cleaner_data_trains_a_better_model(tmp_path: Path) -> None:
    """Similarity filter vs no filter, two seeds each, MMBench (circular) seed means.

    Observed on the default world (2-core CPU; seeds 0 and 1 through the pipeline,
    seeds 0, 2, 3, 4 by ``train_stage`` alone on the same variants):

    - no-filter (51 % truthful captions): 41.7, 40.7 | 40.0, 44.0, 37.7, 38.7 (mean 40.5)
    - similarity (96 % truthful): 47.3, 48.0 | 50.0, 52.0, 49.0, 44.7 (mean 48.5)
    - difference per seed: +5.6, +7.3 | +10.0, +8.0, +11.3, +6.0

    What the margin does not cover, measured and left as it is: the effect belongs to
    this world's models. A tokenizer trained on a larger text set (150 instead of 60
    held-out questions) gave no-filter 38.0 vs similarity 36.7, with 10 points between
    two seeds; an LM trained 6 instead of 3 epochs learnt to copy OCR tokens (TextVQA
    68 instead of 17) and the two recipes tied (50.0 vs 49.5). TextVQA is not asserted:
    it moved by less than its seed spread in every configuration tried.
    """
    result = run_proxy(ProxyConfig(workspace=tmp_path / "ws", recipes=("no-filter", "similarity")))
    print("\n" + format_table(result))
    rows = {row.recipe: row for row in result["rows"]}
    clean, noisy = rows["similarity"], rows["no-filter"]
    assert result["scorer_auc"]["overall"] >= 0.9
    assert clean.labels["truthful"] / clean.labels["samples"] > noisy.labels["truthful"] / noisy.labels["samples"]
    assert clean.mean("mmbench_circular") - noisy.mean("mmbench_circular") >= MMBENCH_MARGIN
    for row in rows.values():
        for method in ("soup-greedy", "soup-uniform"):
            assert row.soups[method]["mmbench_circular"] >= row.mean("mmbench_circular") - SOUP_TOLERANCE, \
                (row.recipe, method)
