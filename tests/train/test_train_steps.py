"""The train steps end to end on the small world: K seeds of stage 1, early abort, stage 2 for survivors."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from bettersynth.steps.train import SELECTION_FILE, select_seeds, train_align, train_finetune, train_model
from bettersynth.steps.train_plan import TrainPlan

PLAN = {
    "align": {"global_batch_size": 8, "per_device_batch_size": 4, "max_length": 64, "learning_rate": 1e-2},
    "finetune": {"global_batch_size": 8, "per_device_batch_size": 8, "max_length": 96, "max_steps": 1},
    "seed_selection": {"decide_after_steps": 1, "margin": 0.5},
}


def _plan(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN | changes))
    return path


def test_plan_rejects_unknown_selection_fields(tmp_path):
    with pytest.raises(ValueError, match=r"plan.yaml:\d+: field 'seed_selection.decide_after'"):
        TrainPlan.load(_plan(tmp_path, seed_selection={"decide_after": 3}))


def test_sweep_aborts_a_seed_and_survivors_match_a_straight_run(mlflow_store, small_world, pico_models, tmp_path):
    dataset, base = small_world.seed_jsonl.parent, pico_models / "llava-base"
    plan = _plan(tmp_path)
    aligned = {seed: tmp_path / f"aligned{seed}" for seed in (0, 1)}
    for seed, out in aligned.items():
        result = train_align(dataset, "md5/ab.dir", base, plan, seed, out)
        assert not result["completed"] and result["steps"] == 1
    # Make seed 1 look hopeless, as a diverging run would.
    curve = json.loads((aligned[1] / "curve.json").read_text())
    curve["steps"][0]["loss"] += 10
    (aligned[1] / "curve.json").write_text(json.dumps(curve))

    selection = tmp_path / "selection"
    assert select_seeds(list(aligned.values()), plan, selection) == [0]
    assert json.loads((selection / SELECTION_FILE).read_text())["aborted"] == [1]
    assert not (selection / "seed1").exists()
    with pytest.raises(ValueError, match="no stage-1 state for seed 1"):
        train_finetune(selection, 1, dataset, "md5/ab.dir", base, small_world.instruct_json, plan, tmp_path / "m1")

    swept = train_finetune(selection, 0, dataset, "md5/ab.dir", base, small_world.instruct_json, plan, tmp_path / "m0")
    straight = train_model(dataset, "md5/ab.dir", base, small_world.instruct_json, plan, 0, tmp_path / "straight")
    assert swept["align_final_loss"] == straight["align_final_loss"]  # pausing for the decision changes nothing
    a, b = load_file(tmp_path / "m0" / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")
    assert all((a[n] == b[n]).all() for n in a)

    client = MlflowClient()
    runs = {r.info.run_name: r for r in client.search_runs(client.search_experiments()[0].experiment_id) if r.info.run_name}
    decision = runs["select-seeds"]
    assert decision.data.tags["seeds.survivors"] == "0" and decision.data.tags["seeds.aborted"] == "1"
    assert len(client.get_metric_history(decision.info.run_id, "seed1/align_loss")) == 1
    train = runs["train-seed0"]
    history = client.get_metric_history(train.info.run_id, "align/loss")
    assert sorted(m.step for m in history) == list(range(1, len(history) + 1)) and len(history) >= 2
    assert train.data.tags["dataset.hash"] == "md5/ab.dir"
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s"):  # every step, both stages
        assert len(client.get_metric_history(train.info.run_id, f"finetune/{key}")) == 1, key
        assert len(client.get_metric_history(train.info.run_id, f"align/{key}")) == len(history), key
    model = client.get_logged_model(swept["mlflow_model_id"])
    assert model.tags["dataset.hash"] == "md5/ab.dir" and model.tags["train.seed"] == "0"
    assert model.source_run_id == train.info.run_id and model.model_type == "llava"
    assert model.tags["checkpoint.uri"] == (tmp_path / "m0").resolve().as_uri()
    assert model.tags["checkpoint.artifact"] == f"runs:/{train.info.run_id}/checkpoint"
    assert train.data.tags["model.id"] == model.model_id


def test_finetune_from_best_starts_every_survivor_from_the_best_stage_1(mlflow_store, small_world, pico_models,
                                                                        tmp_path):
    """Soup ingredients: stage-2 seeds of one stage 1 (the best survivor's), not of their own."""
    dataset, base = small_world.seed_jsonl.parent, pico_models / "llava-base"
    plan = _plan(tmp_path, finetune_from="best", seed_selection={"decide_after_steps": 1})
    aligned = [tmp_path / f"aligned{seed}" for seed in (0, 1)]
    for seed, out in enumerate(aligned):
        train_align(dataset, "md5/ab.dir", base, plan, seed, out)
    selection = tmp_path / "selection"
    assert sorted(select_seeds(aligned, plan, selection)) == [0, 1]
    best = json.loads((selection / SELECTION_FILE).read_text())["survivors"][0]
    tuned = {seed: train_finetune(selection, seed, dataset, "md5/ab.dir", base, small_world.instruct_json, plan,
                                  tmp_path / f"m{seed}") for seed in (0, 1)}
    assert tuned[0]["align_final_loss"] == tuned[1]["align_final_loss"]  # one stage 1, finished twice alike
    own = train_model(dataset, "md5/ab.dir", base, small_world.instruct_json, _plan(tmp_path), best, tmp_path / "own")
    assert tuned[best]["align_final_loss"] == own["align_final_loss"]  # and it is the best seed's
    a, b = load_file(tmp_path / "m0" / "model.safetensors"), load_file(tmp_path / "m1" / "model.safetensors")
    assert any((a[n] != b[n]).any() for n in a)  # stage-2 seeds still differ
    for seed in (0, 1):
        run = MlflowClient().get_run(tuned[seed]["mlflow_run_id"])
        tags, params = run.data.tags, run.data.params
        assert tags["align.seed"] == str(best) and params["align.seed"] == str(best) and tags["train.seed"] == str(seed)


def test_step_metrics_arrive_in_batches_and_all_arrive(mlflow_store):
    """Per-step metrics go out every `every` steps and on flush; none is lost, none doubled."""
    import mlflow

    from bettersynth.steps.train_plan import StepMetrics

    log = StepMetrics("align", every=2)
    with mlflow.start_run() as run:
        client = MlflowClient()
        for step in (1, 2, 3):
            log(step, {"loss": 1.0 / step, "lr": 0.1})
            sent = len(client.get_metric_history(run.info.run_id, "align/loss"))
            assert sent == (2 if step >= 2 else 0), step
        log.flush()
        log.flush()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "align/loss")] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "align/lr")) == 3
