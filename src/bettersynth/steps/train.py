"""The train steps: stage 1 for K seeds, early abort of the poor ones, stage 2 for the survivors.

Pipeline shape (each a KFP component)::

    ParallelFor(seeds): train_align   -> stage 1 up to the decision step; checkpoint + loss curve
    select_seeds(Collected(aligned))  -> survivors, their checkpoints gathered in one artifact
    ParallelFor(survivors): train_finetune -> stage 1 resumed to the end, then stage 2
                                      (from the best survivor's stage 1 with ``finetune_from: best``)

``train_model`` runs both stages of one seed in one call (no selection), for
callers that do not sweep seeds.

Each step hands its stages (``StageCall``) to a runner: ``run_local`` trains
in the step's own pod; with a ``multinode:`` section of world size > 1 in the
training YAML, ``steps.train_remote.RemoteRunner`` runs them as a
``TrainJob``/``PyTorchJob`` on N nodes x G GPUs and brings the results back,
so the step's artifacts and MLflow records are the same either way.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl
from bettersynth.data.llava import dj_to_llava
from bettersynth.steps.train_plan import StageCall, StepMetrics, TrainPlan
from bettersynth.tracking.outage import log_artifact_folder
from bettersynth.tracking.runs import log_dataset_input, log_metric_history, step_run
from bettersynth.train.checkpoint import latest_checkpoint
from bettersynth.train.deepspeed import DeepSpeedSettings
from bettersynth.train.seeds import SeedSelection
from bettersynth.train.seeds import select_seeds as decide

if TYPE_CHECKING:  # the trainer (torch + transformers) loads in the steps that train, not in select-seeds
    from bettersynth.train.trainer import TrainResult

MAX_LOGGED_CHECKPOINT_BYTES = 2 << 30  # larger checkpoints are referenced, not copied into MLflow
CURVE_FILE = "curve.json"  # stage-1 metrics up to the decision, written by train_align
SELECTION_FILE = "seed_selection.json"  # the decision, written by select_seeds


Runner = Callable[[list[StageCall]], "list[TrainResult]"]


def run_local(calls: list[StageCall], deepspeed: DeepSpeedSettings) -> list[TrainResult]:
    """Train the stages in this process, one after the other."""
    from bettersynth.train.trainer import train_stage

    results = []
    for c in calls:
        try:
            results.append(train_stage(c.model_dir, c.records, c.image_root, c.config, c.out_dir, on_step=c.record,
                                       checkpoint_dir=c.checkpoint_dir, stop_after_step=c.stop_after_step,
                                       deepspeed=deepspeed))
        finally:
            c.flush()
    return results


def runner_for(plan: TrainPlan, plan_path: Path, label: str, dataset_hash: str, api: Any = None) -> Runner:
    """Where this step's stages train: here, or as a multi-node job (``label`` names the job)."""
    if not plan.runs_remote:
        return lambda calls: run_local(calls, plan.deepspeed)
    from bettersynth.steps.train_remote import RemoteRunner

    return RemoteRunner(plan, Path(plan_path), label, dataset_hash, api=api)


def pretraining_records(dataset_dir: Path, cap: int | None, cap_seed: int) -> list[dict]:
    """The variant's samples as LLaVA plain-template records, optionally capped by a seeded subsample."""
    samples = [s for s in read_jsonl(Path(dataset_dir) / "samples.jsonl") if isinstance(s, Sample)]
    if cap is not None and len(samples) > cap:
        samples = sorted(random.Random(cap_seed).sample(samples, cap), key=lambda s: s.id)
    return [dj_to_llava(s) for s in samples]


def _log_checkpoint(path: Path, tags: dict[str, str], run_id: str) -> str:
    """Log the final checkpoint: its files as the run's ``checkpoint`` artifact (unless too large), and an
    MLflow LoggedModel that references it, tagged with the dataset hash; returns the model id.

    The LoggedModel's source run is ``run_id`` (its page links back there) and the run's ``model.id``
    tag names it (the registry step lists the version on it).
    """
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    copied = size <= MAX_LOGGED_CHECKPOINT_BYTES
    if copied:
        log_artifact_folder(path, "checkpoint")
    uri = path.resolve().as_uri()
    mlflow.set_tag("checkpoint.uri", uri)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    model = mlflow.create_external_model(  # an artifact reference: large checkpoints stay where they are
        name=f"seed{tags.get('train.seed', '')}", source_run_id=run_id, model_type=config.get("model_type", "vlm"),
        tags=tags | {"checkpoint.uri": uri, "checkpoint.bytes": str(size),
                     "checkpoint.artifact": f"runs:/{run_id}/checkpoint" if copied else ""},
    )
    mlflow.set_tag("model.id", model.model_id)
    return model.model_id


def _params(plan: TrainPlan, seed: int, dataset_hash: str, base_model: Path, n_records: int,
            align_seed: int | None = None) -> dict[str, Any]:
    params = {"seed": seed, "dataset.hash": dataset_hash, "base_model": str(base_model), "pretrain.samples": n_records,
              "finetune_from": plan.finetune_from}
    align = plan.stage("align", seed if align_seed is None else align_seed)
    params |= {f"align.{k}": v for k, v in align.model_dump().items()}
    params |= {f"finetune.{k}": v for k, v in plan.stage("finetune", seed).model_dump().items()}
    params |= {f"deepspeed.{k}": v for k, v in plan.deepspeed.model_dump().items()}
    if plan.multinode is not None:
        params |= {f"multinode.{k}": v for k, v in plan.multinode.model_dump().items()}
    return params | {f"seed_selection.{k}": v for k, v in plan.seed_selection.model_dump().items()}


def train_align(dataset_dir: Path, dataset_hash: str, base_model: Path, plan_path: Path, seed: int, out_dir: Path,
                api: Any = None, dataset_remote: str = "", dataset_name: str = "") -> dict:
    """Stage 1 of one seed up to the decision step, into ``out_dir``.

    ``out_dir`` receives ``curve.json`` (per-step metrics) and either
    ``checkpoints/`` (paused at the decision step) or ``model/`` (stage 1 was
    shorter than the decision window and is complete). ``api``: the
    Kubernetes API for multi-node plans (default: in-cluster credentials).
    """
    plan = TrainPlan.load(plan_path)
    records = pretraining_records(Path(dataset_dir), plan.sample_cap, plan.sample_cap_seed)
    out_dir = Path(out_dir)
    curve: list[dict] = []
    tags = {"dataset.hash": dataset_hash, "train.seed": str(seed)}
    run_stages = runner_for(plan, plan_path, f"align-s{seed}", dataset_hash, api)
    params = _params(plan, seed, dataset_hash, base_model, len(records))
    with step_run(f"align-seed{seed}", params=params, tags=tags, title=[f"seed {seed}", "align"]) as run:
        _log_dataset(dataset_hash, dataset_remote, dataset_name, len(records))
        [result] = run_stages([StageCall(
            "align", Path(base_model), records, Path(dataset_dir), plan.stage("align", seed), out_dir / "model",
            out_dir / "checkpoints", stop_after_step=plan.seed_selection.decide_after_steps,
            on_step=StepMetrics("align"), curve=curve,
        )])
        if result.completed:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the model is the result
        (out_dir / CURVE_FILE).write_text(json.dumps({"seed": seed, "completed": result.completed, "steps": curve}))
    return {"mlflow_run_id": run.info.run_id, "seed": seed, "steps": result.steps, "completed": result.completed,
            "align_loss": result.losses[-1]}


def select_seeds(aligned_dirs: list[Path], plan_path: Path, out_dir: Path) -> list[int]:
    """Decide which seeds continue; gather the survivors' stage-1 state into ``out_dir/seed<N>/``."""
    plan = TrainPlan.load(plan_path)
    curves, sources, completed = {}, {}, []
    for folder in map(Path, aligned_dirs):
        data = json.loads((folder / CURVE_FILE).read_text())
        curves[int(data["seed"])] = [row["loss"] for row in data["steps"]]
        sources[int(data["seed"])] = folder
        completed.append(bool(data["completed"]))
    decision = decide(curves, decision_policy(plan.seed_selection, curves, completed))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with step_run("select-seeds", params={f"seed_selection.{k}": v for k, v in plan.seed_selection.model_dump().items()},
                  title=["select seeds"]):
        log_metric_history([(f"seed{seed}/align_loss", loss, step)  # the curves side by side, one metric per seed
                            for seed, losses in curves.items() for step, loss in enumerate(losses, start=1)])
        for seed in curves:
            mlflow.log_metric(f"seed{seed}/score", decision.scores[seed])
        mlflow.log_metrics({"survivors": len(decision.survivors), "aborted": len(decision.aborted),
                            "best_score": decision.best})
        mlflow.set_tags({"seeds.survivors": ",".join(map(str, decision.survivors)),
                         "seeds.aborted": ",".join(map(str, decision.aborted))})
        mlflow.log_dict(decision.to_json(), SELECTION_FILE)
    for seed in decision.survivors:  # with finetune_from "best" only the best's stage-1 state is read again
        if plan.finetune_from == "own" or seed == decision.survivors[0]:
            shutil.copytree(sources[seed], out_dir / f"seed{seed}")
        else:
            (out_dir / f"seed{seed}").mkdir()
            shutil.copy2(sources[seed] / CURVE_FILE, out_dir / f"seed{seed}" / CURVE_FILE)
    (out_dir / SELECTION_FILE).write_text(json.dumps(decision.to_json(), indent=2))
    return decision.survivors


def decision_policy(policy: SeedSelection, curves: dict[int, list[float]], completed: list[bool]) -> SeedSelection:
    """``policy``, or, when every seed finished stage 1 before the decision step, the same judged at its end.

    Why: with a decision at (or past) stage 1's length the sweep trains whole
    stage-1 runs and picks the best by its final loss; a variant smaller than
    the sample cap has fewer steps, and is judged at its last one.
    """
    shortest = min(map(len, curves.values()), default=0)
    if completed and all(completed) and 0 < shortest < policy.decide_after_steps:
        return policy.model_copy(update={"decide_after_steps": shortest})
    return policy


def train_finetune(
    selection_dir: Path,
    seed: int,
    dataset_dir: Path,
    dataset_hash: str,
    base_model: Path,
    instruct_json: Path,
    plan_path: Path,
    out_dir: Path,
    dataset_remote: str = "",
    dataset_name: str = "",
    api: Any = None,
) -> dict:
    """Finish stage 1 from its decision checkpoint, then run this seed's stage 2 into ``out_dir``.

    The stage 1 is the seed's own, or with ``finetune_from: best`` the best survivor's.
    """
    plan = TrainPlan.load(plan_path)
    if not (Path(selection_dir) / f"seed{seed}" / CURVE_FILE).is_file():
        raise ValueError(f"{selection_dir}: no stage-1 state for seed {seed} (was it aborted?)")
    align_seed = seed if plan.finetune_from == "own" else best_survivor(Path(selection_dir))
    aligned = Path(selection_dir) / f"seed{align_seed}"
    records = pretraining_records(Path(dataset_dir), plan.sample_cap, plan.sample_cap_seed)
    tags = {"dataset.hash": dataset_hash, "train.seed": str(seed), "align.seed": str(align_seed)}
    params = _params(plan, seed, dataset_hash, base_model, len(records), align_seed)
    run_stages = runner_for(plan, plan_path, f"train-s{seed}", dataset_hash, api)
    with step_run(f"train-seed{seed}", params=params, tags=tags, title=[f"seed {seed}"]) as run, \
            tempfile.TemporaryDirectory() as scratch:
        _log_dataset(dataset_hash, dataset_remote, dataset_name, len(records))
        log_metric_history([(f"align/{k}", v, row["step"])  # the whole stage-1 curve in this run
                            for row in json.loads((aligned / CURVE_FILE).read_text())["steps"]
                            for k, v in row.items() if k != "step"])
        calls = []
        if (aligned / "model").is_dir():
            stage1_dir = aligned / "model"
        else:
            # With finetune_from "best" every survivor's task finishes the same stage 1 (same seed, same
            # checkpoint: the same weights); a decision at stage 1's last step leaves nothing to repeat.
            # The folder is this task's (keyed by its seed), so tasks on a shared checkpoint_root never collide.
            ckpt = plan.checkpoint_dir(Path(scratch), dataset_hash, seed, "align")
            if latest_checkpoint(ckpt) is None:  # first attempt: start from the decision checkpoint (read-only input)
                shutil.copytree(aligned / "checkpoints", ckpt, dirs_exist_ok=True)
            stage1_dir = Path(scratch) / "align"
            calls.append(StageCall("align", Path(base_model), records, Path(dataset_dir),
                                   plan.stage("align", align_seed), stage1_dir, ckpt, on_step=StepMetrics("align")))
        return _finetune(plan, seed, stage1_dir, calls, Path(instruct_json), dataset_hash, Path(scratch),
                         Path(out_dir), run.info.run_id, run_stages)


def best_survivor(selection_dir: Path) -> int:
    """The seed whose stage 1 scored best at the decision (``select_seeds`` lists survivors best first)."""
    return int(json.loads((selection_dir / SELECTION_FILE).read_text())["survivors"][0])


def _log_dataset(dataset_hash: str, remote_url: str, name: str, n_samples: int) -> None:
    """The run's pretraining data as an MLflow dataset input sourced from the DVC remote (when known)."""
    if remote_url:
        log_dataset_input(dataset_hash, remote_url, name, path=f"data/variants/{name}", n_samples=n_samples)


def _finetune(plan: TrainPlan, seed: int, stage1_dir: Path, calls: list[StageCall], instruct_json: Path,
              dataset_hash: str, scratch: Path, out_dir: Path, run_id: str, run_stages: Runner) -> dict:
    """Stage 2 from ``stage1_dir`` (after the stage-1 ``calls`` that produce it, in the same run); log the result."""
    instruct = json.loads(instruct_json.read_text())
    calls = calls + [StageCall("finetune", stage1_dir, instruct, instruct_json.parent, plan.stage("finetune", seed),
                               out_dir, plan.checkpoint_dir(scratch, dataset_hash, seed, "finetune"),
                               on_step=StepMetrics("finetune"))]
    *stage1, stage2 = run_stages(calls)
    if stage1:
        mlflow.log_metric("align/trainable_params", stage1[0].trainable_params)
        align_loss = stage1[0].losses[-1]
    else:
        align_loss = json.loads((stage1_dir / "bettersynth_training.json").read_text())["result"]["losses"][-1]
    mlflow.log_metrics({"align/final_loss": align_loss, "finetune/final_loss": stage2.losses[-1],
                        "finetune/trainable_params": stage2.trainable_params})
    model_id = _log_checkpoint(stage2.out_dir, {"dataset.hash": dataset_hash, "train.seed": str(seed)}, run_id)
    return {"mlflow_run_id": run_id, "checkpoint": str(stage2.out_dir), "align_final_loss": align_loss,
            "finetune_final_loss": stage2.losses[-1], "mlflow_model_id": model_id}


def train_model(
    dataset_dir: Path,
    dataset_hash: str,
    base_model: Path,
    instruct_json: Path,
    plan_path: Path,
    seed: int,
    out_dir: Path,
    dataset_remote: str = "",
    dataset_name: str = "",
    api: Any = None,
) -> dict:
    """Train stage 1 on the variant and stage 2 on the fixed instruction set into ``out_dir`` (one seed).

    The stage-1 checkpoint is scratch: only the finetuned model leaves the step.
    """
    plan = TrainPlan.load(plan_path)
    records = pretraining_records(Path(dataset_dir), plan.sample_cap, plan.sample_cap_seed)
    tags = {"dataset.hash": dataset_hash, "train.seed": str(seed)}
    params = _params(plan, seed, dataset_hash, base_model, len(records))
    run_stages = runner_for(plan, plan_path, f"model-s{seed}", dataset_hash, api)
    with step_run(f"train-seed{seed}", params=params, tags=tags, title=[f"seed {seed}"]) as run, \
            tempfile.TemporaryDirectory() as scratch:
        _log_dataset(dataset_hash, dataset_remote, dataset_name, len(records))
        stage1_dir = Path(scratch) / "align"
        align = StageCall("align", Path(base_model), records, Path(dataset_dir), plan.stage("align", seed), stage1_dir,
                          plan.checkpoint_dir(Path(scratch), dataset_hash, seed, "align"), on_step=StepMetrics("align"))
        return _finetune(plan, seed, stage1_dir, [align], Path(instruct_json), dataset_hash, Path(scratch),
                         Path(out_dir), run.info.run_id, run_stages)
