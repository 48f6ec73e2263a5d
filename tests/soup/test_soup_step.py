"""The soup step records every greedy decision, the lineage and the checkpoint in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from bettersynth.steps.soup import run_soup, soup_models

# 1-D models scored by minus their distance to the origin (as in test_soup_methods).
VALUES = {"c": (4.0, 0.0), "a": (1.0, 0.0), "d": (-5.0, 0.0), "b": (-3.0, 0.0)}
RUNS = ["run-c", "run-a", "run-d", "run-b"]


def distance_score(path: Path) -> float:
    return -float(torch.linalg.vector_norm(load_file(Path(path) / "model.safetensors")["w"]))


@pytest.fixture
def points(handmade) -> list[Path]:
    return [handmade(name, {"w": torch.tensor(value)}) for name, value in VALUES.items()]


def history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_soup_step_greedy_records_every_step(points, mlflow_store, tmp_path):
    client = mlflow_store
    result = run_soup(points, RUNS, "greedy", tmp_path / "soup", evaluate=distance_score)
    run_id = result["mlflow_run_id"]
    # sorted: a(-1), b(-3), c(-4), d(-5); a+b ties (kept, "ge"), +c -> -2/3 kept, +d -> -0.75 dropped
    assert history(client, run_id, "greedy/candidate") == [1, 3, 0, 2]
    assert history(client, run_id, "greedy/candidate_score") == pytest.approx([-1, -1, -2 / 3, -0.75])
    assert history(client, run_id, "greedy/accepted") == [1, 1, 1, 0]
    assert history(client, run_id, "ingredient_heldout_score") == [-4, -1, -5, -3]
    assert history(client, run_id, "ingredient_weight") == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    assert client.get_run(run_id).data.metrics["heldout_score"] == pytest.approx(-2 / 3)
    run = client.get_run(run_id)
    assert run.data.tags["soup.method"] == "greedy"
    assert json.loads(run.data.params["soup.ingredients"]) == RUNS
    record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/soup.json")
    assert [(s["run"], s["accepted"]) for s in record["steps"]] == [
        ("run-a", True), ("run-b", True), ("run-c", True), ("run-d", False)]
    assert record["ingredient_scores"] == [-4, -1, -5, -3] and record["ingredients"] == RUNS
    logged = Path(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/checkpoint", dst_path=str(tmp_path / "dl")))
    torch.testing.assert_close(load_file(logged / "model.safetensors")["w"], torch.tensor([2 / 3, 0.0]))
    assert result["steps"] == record["steps"] and result["weights"] == record["weights"]


def test_soup_step_gt_records_rejections(points, mlflow_store, tmp_path):
    result = run_soup(points, RUNS, "greedy", tmp_path / "soup", evaluate=distance_score, accept_if="gt")
    assert history(mlflow_store, result["mlflow_run_id"], "greedy/accepted") == [1, 0, 0, 0]  # a+b ties
    assert mlflow_store.get_run(result["mlflow_run_id"]).data.params["soup.accept_if"] == "gt"


def test_soup_step_weighted_without_heldout(points, mlflow_store, tmp_path):
    result = run_soup(points[:2], RUNS[:2], "weighted", tmp_path / "soup", weights=[1, 3], log_checkpoint=False)
    assert result["heldout_score"] is None and result["ingredient_scores"] is None and result["steps"] == []
    assert torch.equal(load_file(tmp_path / "soup" / "model.safetensors")["w"], torch.tensor([1.75, 0.0]))
    data = mlflow_store.get_run(result["mlflow_run_id"]).data
    assert "heldout_score" not in data.metrics
    assert mlflow_store.list_artifacts(result["mlflow_run_id"], "checkpoint") == []


def test_soup_step_refusals(points, mlflow_store, tmp_path):
    with pytest.raises(ValueError, match="'greedy' soup needs a held-out split"):
        run_soup(points, RUNS, "greedy", tmp_path / "out" / "a")
    with pytest.raises(ValueError, match="ingredient_runs"):
        run_soup(points, RUNS[:1], "uniform", tmp_path / "out" / "b")
    with pytest.raises(ValueError, match="both heldout_textvqa_dir and heldout_mmbench_tsv"):
        soup_models(points, RUNS, "uniform", tmp_path / "out" / "c", tmp_path, None)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_soup_step_greedy_runs_the_real_eval(small_world, pico_models, mlflow_store, tmp_path):
    """Greedy over the pico LLaVA and a perturbed copy, scored by the eval step on the held-out split."""
    import shutil

    from safetensors.torch import save_file

    base = pico_models / "llava-base"
    noisy = tmp_path / "noisy"
    shutil.copytree(base, noisy)
    state = load_file(base / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    noised = {k: v + 0.1 * torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v
              for k, v in state.items()}
    save_file(noised, noisy / "model.safetensors", metadata={"format": "pt"})
    result = soup_models([base, noisy], ["base", "noisy"], "greedy", tmp_path / "soup",
                         small_world.heldout_textvqa.folder, small_world.heldout_mmbench_tsv)
    assert len(result["steps"]) == 2 and len(result["ingredient_scores"]) == 2
    assert history(mlflow_store, result["mlflow_run_id"], "greedy/accepted")[0] == 1
    assert (tmp_path / "soup" / "config.json").is_file()
