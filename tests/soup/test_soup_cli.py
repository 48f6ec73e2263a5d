"""``bettersynth soup`` end to end on pico checkpoints and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bettersynth.steps.evaluate as evaluate_step
import bettersynth.steps.soup as soup_step
from bettersynth.cli.main import main


def distance_score(path: Path) -> float:
    return -float(torch.linalg.vector_norm(load_file(Path(path) / "model.safetensors")["w"]))


def test_soup_cli_uniform_of_a_path_and_a_run(llamas, logged_checkpoint, load_state, mlflow_store, tmp_path, capsys):
    run_id = logged_checkpoint(llamas["fp32_1"])
    out = tmp_path / "soup"
    assert main(["soup", str(llamas["fp32_0"]), run_id, "--out", str(out)]) == 0
    a, b, soup = load_state(llamas["fp32_0"]), load_state(llamas["fp32_1"]), load_state(out)
    for name, tensor in soup.items():
        assert torch.equal(tensor, ((a[name].double() + b[name].double()) / 2).float()), name
    printed = capsys.readouterr().out
    assert run_id in printed and str(out) in printed
    soup_run = mlflow_store.search_runs(
        [mlflow_store.get_experiment_by_name("soup-tests").experiment_id], "tags.`bettersynth.step` = 'soup-uniform'")[0]
    assert json.loads(soup_run.data.params["soup.ingredients"]) == [str(llamas["fp32_0"]), run_id]


def test_soup_cli_greedy_registers_lineage_and_moves_champion_by_rule(
    handmade, logged_checkpoint, mlflow_store, tmp_path, monkeypatch, capsys
):
    # Held-out and test scores are stubbed (the real eval is covered by the slow step test); all else is real.
    monkeypatch.setattr(soup_step, "heldout_evaluator", lambda textvqa, mmbench: distance_score)
    test_scores = iter([40.0, 30.0])

    def fake_evaluate_model(model_dir, textvqa_dir, mmbench_tsv, out_dir, label):
        score = next(test_scores)
        return {"metrics": {"textvqa_accuracy": score, "mmbench_circular": score}, "mlflow_run_id": ""}

    monkeypatch.setattr(evaluate_step, "evaluate_model", fake_evaluate_model)
    runs = [logged_checkpoint(handmade(name, {"w": torch.tensor(v)})) for name, v in
            {"a": (1.0, 0.0), "b": (-3.0, 0.0), "c": (4.0, 0.0)}.items()]
    common = ["--method", "greedy", "--heldout-textvqa-dir", "h", "--heldout-mmbench-tsv", "h.tsv",
              "--register", "vlm", "--textvqa-dir", "t", "--mmbench-tsv", "t.tsv"]
    assert main(["soup", *runs, "--out", str(tmp_path / "one"), *common]) == 0
    version = mlflow_store.get_model_version("vlm", "1")
    assert version.tags["soup.method"] == "greedy" and version.tags["kind"] == "soup"
    assert json.loads(version.tags["soup.ingredients"]) == runs
    assert json.loads(version.tags["soup.ingredient_scores"]) == [-1.0, -3.0, -4.0]
    assert json.loads(version.tags["soup.weights"]) == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-6)
    assert "champion moved to it" in capsys.readouterr().out
    # a worse soup (test score 30 < 40) only becomes the candidate
    assert main(["soup", runs[0], "models:/vlm/1", "--out", str(tmp_path / "two"), *common]) == 0
    aliases = {k: str(v) for k, v in mlflow_store.get_registered_model("vlm").aliases.items()}
    assert aliases == {"candidate": "2", "champion": "1"}
    assert json.loads(mlflow_store.get_model_version("vlm", "2").tags["soup.ingredients"])[1] == \
        mlflow_store.get_model_version("vlm", "1").run_id
    assert "champion stays on version 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["soup", "--out", "x"], "at least one ingredient"),
        (["soup", "a"], "--out is required"),
        (["soup", "a", "--out", "x", "--heldout-textvqa-dir", "h"], "or neither"),
        (["soup", "a", "--out", "x", "--register", "m"], "--register needs"),
    ],
)
def test_soup_cli_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
