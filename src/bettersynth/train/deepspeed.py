"""DeepSpeed ZeRO-2 configuration derived from a stage's settings.

Why: the recipe trains with ZeRO-2 (optimizer states and gradients sharded
over the data-parallel ranks), and the challenge kit offloads the optimizer to
CPU to fit 2B models on 24-48 GB cards. The JSON must agree with the stage's
global batch arithmetic, or DeepSpeed refuses to start (or, with ``"auto"``
left unresolved outside the HF Trainer, fails late); deriving it from
``StageConfig`` keeps one source of truth. DeepSpeed is imported only by
``require_deepspeed``; it installs without compiled ops (the ``dev`` extra),
and ``enabled: on`` runs ZeRO-2 on CPU too (gloo), which is how the tests
check it against the plain loop. The GPU image builds its fused ops.

Settings that are known to work with offload (LLaVA/MGM ``zero2_offload``):
``offload_optimizer.device=cpu`` with ``pin_memory``, an ``optimizer`` section
so that DeepSpeed builds its fused ``DeepSpeedCPUAdam`` (a torch optimizer is
refused with offload unless ``zero_force_ds_cpu_optimizer`` is false, and is
then ~5x slower), bf16 rather than fp16 (no loss scaling), and
``contiguous_gradients`` + ``overlap_comm`` with 5e8-element buckets.

Example::

    config = deepspeed_config(defaults_for("align"), DeepSpeedSettings(offload_optimizer=True))
    Path("ds_zero2.json").write_text(json.dumps(config))
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from bettersynth.core.device import resolve_dtype
from bettersynth.train.config import StageConfig


class DeepSpeedSettings(BaseModel):
    """How DeepSpeed runs a stage on GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: Literal["auto", "on", "off"] = "auto"  # auto: on when CUDA is present; on: also on CPU (gloo)
    zero_stage: Literal[2] = 2  # ZeRO-2: shard optimizer states and gradients (the recipe's choice)
    offload_optimizer: bool = False  # keep optimizer states on CPU (DeepSpeedCPUAdam); slower, much less GPU memory
    bucket_size: int = Field(500_000_000, gt=0)  # elements per reduce / all-gather bucket
    overlap_comm: bool = True  # overlap gradient reduction with backward


def use_deepspeed(settings: DeepSpeedSettings, cuda_available: bool) -> bool:
    """Whether this run uses DeepSpeed: ``on`` always (CPU included), ``auto`` when CUDA is present."""
    return settings.enabled == "on" or (settings.enabled == "auto" and cuda_available)


def deepspeed_config(stage: StageConfig, settings: DeepSpeedSettings, device: str = "cuda") -> dict[str, Any]:
    """The DeepSpeed JSON for ``stage`` on ``device``: batch sizes, precision, clipping and ZeRO-2, all concrete."""
    zero: dict[str, Any] = {
        "stage": settings.zero_stage,
        "overlap_comm": settings.overlap_comm,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        "reduce_bucket_size": settings.bucket_size,
        "allgather_bucket_size": settings.bucket_size,
    }
    config: dict[str, Any] = {
        "train_batch_size": stage.global_batch_size,
        "train_micro_batch_size_per_gpu": stage.per_device_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "gradient_clipping": stage.max_grad_norm,
        "bf16": {"enabled": resolve_dtype(stage.dtype, device) == torch.bfloat16},  # auto: bf16 on CUDA, fp32 on CPU
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # bettersynth logs every step itself
        "wall_clock_breakdown": False,
    }
    if settings.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        config["optimizer"] = {  # lets DeepSpeed build DeepSpeedCPUAdam for the offloaded states
            "type": "AdamW",
            "params": {"lr": stage.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
                       "weight_decay": stage.weight_decay},
        }
    return config


def require_deepspeed() -> Any:
    """Import DeepSpeed (the ``gpu`` extra) with an error that says how to get it."""
    try:
        return importlib.import_module("deepspeed")
    except ImportError as exc:
        raise ImportError("DeepSpeed is not installed: install bettersynth[gpu] in the GPU image") from exc
