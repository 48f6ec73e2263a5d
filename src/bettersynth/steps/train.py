"""The train step: stage 1 (projector alignment) on a dataset variant, then stage 2 (instruction finetune)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml
from pydantic import BaseModel, ConfigDict, Field

from bettersynth.data.jsonl import read_jsonl
from bettersynth.data.llava import dj_to_llava
from bettersynth.data.sample import Sample
from bettersynth.tracking import step_run
from bettersynth.train import StageConfig, train_stage

MAX_LOGGED_CHECKPOINT_BYTES = 2 << 30  # larger checkpoints are referenced, not copied into MLflow


class TrainPlan(BaseModel):
    """Both stages' settings, as read from a training YAML (e.g. ``configs/train/quickstart.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    align: dict[str, Any] = Field(default_factory=dict)  # StageConfig overrides for stage 1
    finetune: dict[str, Any] = Field(default_factory=dict)  # StageConfig overrides for stage 2
    sample_cap: int | None = None  # challenge rule: at most this many pretraining samples
    sample_cap_seed: int = 1024  # the challenge's subsample seed

    @classmethod
    def load(cls, path: Path) -> "TrainPlan":
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except Exception as exc:
            raise ValueError(f"{path}: invalid training config: {exc}") from exc

    def stage(self, stage: str, seed: int) -> StageConfig:
        overrides = self.align if stage == "align" else self.finetune
        return StageConfig.for_stage(stage, **{**overrides, "seed": seed})


def pretraining_records(dataset_dir: Path, cap: int | None, cap_seed: int) -> list[dict]:
    """The variant's samples as LLaVA plain-template records, optionally capped by a seeded subsample."""
    samples = [s for s in read_jsonl(Path(dataset_dir) / "samples.jsonl") if isinstance(s, Sample)]
    if cap is not None and len(samples) > cap:
        samples = sorted(random.Random(cap_seed).sample(samples, cap), key=lambda s: s.id)
    return [dj_to_llava(s) for s in samples]


def _log_step(prefix: str):
    def log(step: int, values: dict[str, float]) -> None:
        mlflow.log_metrics({f"{prefix}/{k}": float(v) for k, v in values.items()}, step=step)

    return log


def _log_checkpoint(path: Path) -> None:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if size <= MAX_LOGGED_CHECKPOINT_BYTES:
        mlflow.log_artifacts(str(path), artifact_path="checkpoint")
    mlflow.set_tag("checkpoint.uri", path.resolve().as_uri())


def train_model(
    dataset_dir: Path,
    dataset_hash: str,
    base_model: Path,
    instruct_json: Path,
    plan_path: Path,
    seed: int,
    out_dir: Path,
) -> dict:
    """Train stage 1 on the variant and stage 2 on the fixed instruction set into ``out_dir``.

    The stage-1 checkpoint is scratch: only the finetuned model leaves the step.
    """
    plan = TrainPlan.load(plan_path)
    align, finetune = plan.stage("align", seed), plan.stage("finetune", seed)
    records = pretraining_records(Path(dataset_dir), plan.sample_cap, plan.sample_cap_seed)
    instruct = json.loads(Path(instruct_json).read_text())
    params = {"seed": seed, "dataset.hash": dataset_hash, "base_model": str(base_model), "pretrain.samples": len(records)}
    params |= {f"align.{k}": v for k, v in align.model_dump().items()}
    params |= {f"finetune.{k}": v for k, v in finetune.model_dump().items()}
    tags = {"dataset.hash": dataset_hash, "train.seed": str(seed)}
    out_dir = Path(out_dir)
    with step_run(f"train-seed{seed}", params=params, tags=tags) as run, tempfile.TemporaryDirectory() as scratch:
        stage1 = train_stage(Path(base_model), records, Path(dataset_dir), align, Path(scratch) / "align", on_step=_log_step("align"))
        stage2 = train_stage(
            stage1.out_dir, instruct, Path(instruct_json).parent, finetune, out_dir, on_step=_log_step("finetune")
        )
        mlflow.log_metrics({
            "align/final_loss": stage1.losses[-1],
            "finetune/final_loss": stage2.losses[-1],
            "align/trainable_params": stage1.trainable_params,
            "finetune/trainable_params": stage2.trainable_params,
        })
        _log_checkpoint(stage2.out_dir)
    return {
        "mlflow_run_id": run.info.run_id,
        "checkpoint": str(stage2.out_dir),
        "align_final_loss": stage1.losses[-1],
        "finetune_final_loss": stage2.losses[-1],
    }
