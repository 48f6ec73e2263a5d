"""The quickstart with a pico Mini-Gemini: every step takes it as it takes LLaVA, and what is registered loads back."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bettersynth.reports.compare import collect_rows
from bettersynth.soup.ingredients import resolve_ingredient
from bettersynth.vlm import load_vlm
from bettersynth.vlm.mgm import MiniGeminiForConditionalGeneration
from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
from bettersynth_demo.world import WorldConfig

pytestmark = pytest.mark.slow  # the whole quickstart with a pico Mini-Gemini: about 4 min on 2 cores (make test-slow)

TINY = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("workspace-mgm")
    summary = run_quickstart(QuickstartConfig(workspace=workspace, seeds=[0, 1], world=TINY, arch="mgm"))
    return workspace, summary


def test_every_finetune_and_soup_is_scored_and_registered(run):
    _, summary = run
    assert {row["model"] for row in summary.models} == {"seed0", "seed1", "soup-uniform", "soup-greedy"}
    for row in summary.models:
        assert row["textvqa"] is not None and row["mmbench_circular"] is not None
    assert len(summary.registry) == 4 and summary.aliases["champion"]


def test_registered_versions_load_back_as_mini_gemini_with_every_weight(run, tmp_path):
    _, summary = run
    for entry in summary.registry:
        version = str(entry["version"])
        ingredient = resolve_ingredient(f"models:/bettersynth-vlm/{version}", tmp_path / version)
        vlm = load_vlm(ingredient.path, dtype=torch.float32)
        assert isinstance(vlm.model, MiniGeminiForConditionalGeneration)
        saved = load_file(ingredient.path / "model.safetensors")
        assert any(k.startswith("model.aux_tower.") for k in saved) and any("patch_mining" in k for k in saved)
        vlm.model.save_pretrained(tmp_path / f"again-{version}")
        again = load_file(tmp_path / f"again-{version}" / "model.safetensors")
        assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


def test_compare_lists_the_mini_gemini_models(run):
    _, summary = run
    rows = [r for r in collect_rows(["bettersynth-quickstart"]) if r.pipeline_run == summary.parent_run_id]
    assert sorted(r.model for r in rows) == ["seed0", "seed1", "soup-greedy", "soup-uniform"]
    assert all(r.score is not None and r.model_version for r in rows)
