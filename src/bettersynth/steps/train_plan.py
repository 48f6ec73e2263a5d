"""A training step's plan and stage calls: what both the local and the multi-node runner take.

Why: ``steps.train`` (the KFP steps) and ``steps.train_remote`` (the TrainJob
runner) both speak in ``TrainPlan`` and ``StageCall``; keeping them here lets
each import them without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bettersynth.core.yaml_lines import load_model
from bettersynth.platform.trainjob import MultiNodeSettings
from bettersynth.tracking.runs import log_metric_history
from bettersynth.train.config import StageConfig
from bettersynth.train.deepspeed import DeepSpeedSettings
from bettersynth.train.seeds import SeedSelection


class TrainPlan(BaseModel):
    """Both stages' settings, as read from a training YAML (e.g. ``configs/train/quickstart.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    align: dict[str, Any] = Field(default_factory=dict)  # StageConfig overrides for stage 1
    finetune: dict[str, Any] = Field(default_factory=dict)  # StageConfig overrides for stage 2
    sample_cap: int | None = None  # challenge rule: at most this many pretraining samples
    sample_cap_seed: int = 1024  # the challenge's subsample seed
    seed_selection: SeedSelection = Field(default_factory=SeedSelection)  # early abort of poor stage-1 seeds
    # Where each survivor's stage 2 starts: its own stage 1, or the best survivor's. "best" makes the
    # finetunes soup ingredients in the sense of Wortsman et al.: finetunes of one pretrained model
    # (the proxy's uniform soups of finetunes with their own stage 1 lost 2-7 MMBench points).
    finetune_from: Literal["own", "best"] = "own"
    checkpoint_root: str | None = None  # persistent folder (e.g. a PVC) for resumable checkpoints; None: scratch
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)  # ZeRO-2 on GPUs (offload optional)
    multinode: MultiNodeSettings | None = None  # train as a TrainJob/PyTorchJob of N nodes x G GPUs (world size > 1)

    @field_validator("align", "finetune")
    @classmethod
    def _stage_overrides_are_valid(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A typo in a stage's settings fails when the YAML is read, not after stage 1 has run."""
        try:
            StageConfig.for_stage(info.field_name, **overrides)
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return overrides

    @classmethod
    def load(cls, path: Path) -> TrainPlan:
        """Read and check the whole YAML before any work; errors name ``file:line`` and the field."""
        return load_model(Path(path), cls)

    def stage(self, stage: str, seed: int) -> StageConfig:
        overrides = self.align if stage == "align" else self.finetune
        return StageConfig.for_stage(stage, **{**overrides, "seed": seed})

    def checkpoint_dir(self, scratch: Path, dataset_hash: str, seed: int, stage: str) -> Path:
        """Where a stage's checkpoints go: under ``checkpoint_root`` (survives pod restarts) or scratch."""
        root = Path(self.checkpoint_root) / dataset_hash.replace("/", "_") if self.checkpoint_root else Path(scratch)
        return root / f"seed{seed}" / stage

    @property
    def runs_remote(self) -> bool:
        return self.multinode is not None and self.multinode.world_size > 1


@dataclass
class StageCall:
    """One stage a step trains: ``train_stage``'s arguments plus where its per-step metrics go."""

    name: str  # align or finetune: the metric prefix
    model_dir: Path
    records: list[dict]
    image_root: Path
    config: StageConfig
    out_dir: Path
    checkpoint_dir: Path
    stop_after_step: int | None = None
    on_step: StepMetrics | None = None  # MLflow logging of each step
    curve: list[dict] | None = None  # also collect the step rows here (the stage-1 curve)

    def record(self, step: int, values: dict[str, float], log: bool = True) -> None:
        if log and self.on_step is not None:
            self.on_step(step, values)
        if self.curve is not None:
            self.curve.append({"step": step, **{k: float(v) for k, v in values.items()}})

    def flush(self) -> None:
        """Send the step rows ``on_step`` still holds (it batches them)."""
        if self.on_step is not None:
            self.on_step.flush()


class StepMetrics:
    """Per-step metrics to the active MLflow run, ``prefix/<name>``, sent in batches.

    Why: one ``log_metrics`` call per step cost 5 ms against a local store, and
    two seeds training side by side contend for it (a proxy stage 1 has 1,200
    steps). Rows go out every ``every`` steps and when the stage ends.
    """

    def __init__(self, prefix: str, every: int = 50) -> None:
        self.prefix, self.every = prefix, every
        self.rows: list[tuple[str, float, int]] = []
        self.pending_steps = 0

    def __call__(self, step: int, values: dict[str, float]) -> None:
        self.rows += [(f"{self.prefix}/{k}", float(v), step) for k, v in values.items()]
        self.pending_steps += 1
        if self.pending_steps >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            log_metric_history(self.rows)
        self.rows, self.pending_steps = [], 0
