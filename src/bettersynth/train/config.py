"""Settings of one LLaVA training stage, with the MGM-2B / LLaVA-1.5 recipe as defaults.

Why: the global batch is the number the recipe fixes (256 to align, 128 to
finetune); gradient accumulation is derived from it so that the same config
trains the same model on one GPU or eight, and a batch that cannot be met
exactly is refused instead of silently changed.

Example::

    config = defaults_for("align", per_device_batch_size=16)  # validated; model_copy() is not
    config.gradient_accumulation_steps  # 256 / (16 * 1) = 16
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stage = Literal["align", "finetune"]

# Values a stage takes when the field is not given (MGM-2B / LLaVA-1.5 scripts, 8 GPUs).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "align": {"learning_rate": 1e-3, "global_batch_size": 256, "per_device_batch_size": 32,
              "image_aspect_ratio": "crop"},
    "finetune": {"learning_rate": 2e-5, "global_batch_size": 128, "per_device_batch_size": 16,
                 "image_aspect_ratio": "pad"},
}


class StageConfig(BaseModel):
    """One stage's hyper-parameters; unset stage-dependent fields take ``STAGE_DEFAULTS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Stage  # align: train the projector only; finetune: projector + language model
    learning_rate: float = Field(gt=0)  # peak LR after warmup (align 1e-3, finetune 2e-5)
    global_batch_size: int = Field(gt=0)  # samples per optimizer step over all devices (align 256, finetune 128)
    per_device_batch_size: int = Field(gt=0)  # samples per forward pass on one device
    num_epochs: int = Field(1, gt=0)  # passes over the data
    max_steps: int | None = Field(None, gt=0)  # optional cap on optimizer steps (the schedule ends there)
    warmup_ratio: float = Field(0.03, ge=0, le=1)  # fraction of steps with linear LR warmup
    lr_schedule: Literal["cosine"] = "cosine"  # LR decay after warmup
    weight_decay: float = Field(0.0, ge=0)  # AdamW decoupled weight decay
    max_grad_norm: float = Field(1.0, gt=0)  # clip the global gradient norm to this
    max_length: int = Field(2048, gt=0)  # tokens per example (image tokens included); longer ones are truncated
    image_aspect_ratio: Literal["crop", "pad"]  # crop: processor's resize+center crop; pad: pad to square first
    seed: int = 42  # seeds the data order and any randomness in the model
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # compute dtype; auto = bf16 on CUDA, fp32 on CPU
    world_size: int = Field(1, gt=0)  # data-parallel processes (1 unless distributed)
    num_workers: int = Field(0, ge=0)  # image-loading processes; 0 loads in the training process
    checkpoint_every: int | None = Field(None, gt=0)  # save a resumable checkpoint every N optimizer steps
    keep_checkpoints: int = Field(1, gt=0)  # newest checkpoints kept on disk (older ones are deleted)

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stage") in STAGE_DEFAULTS:
            data = STAGE_DEFAULTS[data["stage"]] | {k: v for k, v in data.items() if v is not None}
        return data

    @model_validator(mode="after")
    def _batch_divides(self) -> "StageConfig":
        per_step = self.per_device_batch_size * self.world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"per_device_batch_size {self.per_device_batch_size} x world_size {self.world_size} "
                f"(= {per_step}); gradient accumulation must be a whole number"
            )
        return self

    @classmethod
    def for_stage(cls, stage: Stage, **overrides: Any) -> "StageConfig":
        """The recipe's config for ``stage``, with ``overrides`` applied (validated)."""
        return cls(stage=stage, **overrides)

    @property
    def gradient_accumulation_steps(self) -> int:
        """global = per_device x accumulation x world_size, solved for accumulation."""
        return self.global_batch_size // (self.per_device_batch_size * self.world_size)


def defaults_for(stage: Stage, **overrides: Any) -> StageConfig:
    """The recipe's config for ``stage``, with ``overrides`` applied (validated)."""
    return StageConfig.for_stage(stage, **overrides)
