"""Train one LLaVA stage (align or finetune): a plain PyTorch loop that reads top to bottom.

Why: the recipe is small (freeze, AdamW, warmup + cosine, accumulation,
clipping); a loop with nothing hidden makes each of those checkable, and the
same loop trains the tiny test model on CPU and a real one on a GPU.

Loss normalisation: the loss of an optimizer step is the mean over *all*
labelled tokens of its global batch, however they are split into
micro-batches and processes and however short the last batch of an epoch is.
Each micro-batch backpropagates its summed token loss; before clipping, the
gradients (summed over processes) are divided by the step's total count of
labelled tokens. ``train.engine`` does the reduction and the update: plain
torch, or DeepSpeed ZeRO-2 on GPUs.

Example::

    result = train_stage(model_dir, records, image_root, defaults_for("align"), out_dir,
                         on_step=lambda step, m: mlflow.log_metrics(m, step=step))
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.data import DataLoader
from transformers import LlavaForConditionalGeneration

from bettersynth.core.device import resolve_device, resolve_dtype
from bettersynth.train.checkpoint import (
    TrainerState,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from bettersynth.train.config import StageConfig
from bettersynth.train.deepspeed import DeepSpeedSettings
from bettersynth.train.engine import DistInfo, all_sum, barrier, dist_info, engine_summary, make_engine, optimizer_step
from bettersynth.train.freeze import freeze_for_stage
from bettersynth.train.schedule import SCHEDULES, warmup_steps_for
from bettersynth.vlm import load_vlm
from bettersynth.vlm.inputs import IGNORE_INDEX, LlavaCollator, LlavaDataset

logger = logging.getLogger(__name__)

STAGE_TEMPLATE = {"align": "plain", "finetune": "chat"}  # prompt template each stage trains on
STATE_FILE = "bettersynth_training.json"  # config + result, saved beside the weights

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    out_dir: Path  # where the trained model and processor were saved
    steps: int  # optimizer steps taken
    losses: list[float] = field(default_factory=list)  # mean token loss of each optimizer step
    trainable_params: int = 0
    total_params: int = 0
    samples_seen: int = 0  # examples consumed, all epochs together
    completed: bool = True  # False when paused by stop_after_step (resume from the checkpoint)
    trainable_checksum: float = 0.0  # sum of the trained weights (equal on every data-parallel rank)


def plan_steps(n_samples: int, config: StageConfig, rank: int = 0) -> list[list[list[int]]]:
    """Sample indices for every optimizer step of process ``rank``, split into micro-batches.

    Each epoch is a fresh seeded permutation cut into global batches; the last
    one of an epoch may be short (``drop_last=False``) and then has fewer
    micro-batches. With ``world_size`` processes, rank ``r`` takes every
    ``world_size``-th sample of each global batch from the ``r``-th on; a short
    last batch is cut to a multiple of ``world_size`` so that every rank takes
    the same number of micro-batches (at most ``world_size - 1`` samples an
    epoch are left out). ``max_steps`` cuts the plan.
    """
    if not 0 <= rank < config.world_size:
        raise ValueError(f"rank {rank} is outside world_size {config.world_size}")
    generator = torch.Generator().manual_seed(config.seed)
    world, size = config.world_size, config.per_device_batch_size
    steps: list[list[list[int]]] = []
    for _ in range(config.num_epochs):
        order = torch.randperm(n_samples, generator=generator).tolist()
        for start in range(0, n_samples, config.global_batch_size):
            batch = order[start : start + config.global_batch_size]
            batch = batch[: len(batch) - len(batch) % world][rank::world]  # this rank's share
            if batch:
                steps.append([batch[i : i + size] for i in range(0, len(batch), size)])
    return steps[: config.max_steps] if config.max_steps else steps


def train_stage(
    model_dir: Path,
    records: list[dict],
    image_root: Path,
    config: StageConfig,
    out_dir: Path,
    on_step: StepCallback | None = None,
    checkpoint_dir: Path | None = None,
    stop_after_step: int | None = None,
    deepspeed: DeepSpeedSettings | None = None,
) -> TrainResult:
    """Train ``config.stage`` from ``model_dir`` on LLaVA ``records``; save to ``out_dir``.

    ``on_step(step, metrics)`` is called after every optimizer step (``step``
    counts from 1) with ``loss``, ``lr``, ``grad_norm`` (before clipping),
    ``samples_per_s``, ``tokens_per_s`` (non-pad tokens, image tokens
    included; both over all processes) and ``data_wait_fraction`` (time blocked
    on the loader); the caller decides where they go (MLflow, a progress bar).

    With ``checkpoint_dir``, a checkpoint is saved every
    ``config.checkpoint_every`` steps and the run resumes from the newest one
    found there. ``stop_after_step`` pauses the run after that step: it saves a
    checkpoint (``checkpoint_dir`` required) and returns with
    ``completed=False`` and nothing in ``out_dir``; calling again resumes it.

    Under ``torchrun`` (or an initialised process group) every process calls
    this; the world size is the group's, and ``config`` is re-validated at it
    (refused when the global batch cannot be met). Only rank 0 reports, saves
    and writes checkpoints (``checkpoint_dir`` must then be shared storage).
    With CUDA present, ``deepspeed`` (default: auto) trains under DeepSpeed ZeRO-2.
    """
    if not records:
        raise ValueError("records is empty: nothing to train on")
    if stop_after_step is not None and checkpoint_dir is None:
        raise ValueError("stop_after_step needs a checkpoint_dir to resume from")
    info = dist_info()
    config = at_world_size(config, info.world_size)

    # -- setup ---------------------------------------------------------------
    device = torch.device(resolve_device("auto", local_rank=info.local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = resolve_dtype(config.dtype, device)
    torch.manual_seed(config.seed)
    # Weights stay fp32 (AdamW's master copy); bf16 is used for compute via autocast.
    vlm = load_vlm(model_dir, dtype=torch.float32, device=device)  # LLaVA or Mini-Gemini, by config.json
    model, processor = vlm.model, vlm.processor
    counts = freeze_for_stage(model, config.stage)
    params = [p for p in model.parameters() if p.requires_grad]
    engine = make_engine(model, params, config, deepspeed, info)

    dataset = LlavaDataset(
        records, image_root, processor, STAGE_TEMPLATE[config.stage], config.max_length, config.image_aspect_ratio
    )
    plan = plan_steps(len(dataset), config, info.rank)
    schedule = SCHEDULES.get(config.lr_schedule)
    total_steps = len(plan)
    warmup_steps = warmup_steps_for(total_steps, config.warmup_ratio)
    state = TrainerState(0, total_steps, warmup_steps, [], 0, config.model_dump())
    resume_from = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    start = check_resumable(resume_from, state.config, total_steps) if resume_from is not None else 0
    # The data position is the step index into the plan: the loader starts at the first step not yet taken.
    loader = DataLoader(
        dataset,
        batch_sampler=[micro for step in plan[start:] for micro in step],
        collate_fn=LlavaCollator(processor.tokenizer.pad_token_id, padding_side="right"),
        num_workers=config.num_workers,
    )
    micro_batches = iter(loader)  # before restoring RNG: worker seeding draws from it in every run alike
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, engine)
        logger.info("resuming %s at step %d/%d from %s", config.stage, state.step, total_steps, resume_from)
    logger.info(
        "stage %s: %d samples, %d steps (%d warmup), %d x %d x %d per step, trainable %d / %d params, %s on %s (%s)",
        config.stage, len(dataset), total_steps, warmup_steps, config.per_device_batch_size,
        config.gradient_accumulation_steps, config.world_size, counts.trainable, counts.total, dtype, device,
        engine_summary(engine),
    )

    # -- loop ----------------------------------------------------------------
    result = TrainResult(Path(out_dir), state.step, state.losses, counts.trainable, counts.total, state.samples_seen)
    model.train()
    for step in range(state.step, total_steps):
        started = time.perf_counter()
        lr = schedule(step, total_steps, warmup_steps, config.learning_rate)
        batches = []
        for _ in plan[step]:
            batches.append(next(micro_batches))
        data_wait = time.perf_counter() - started
        # The step's loss is the mean over *all* labelled tokens of the global batch.
        loss_sum, global_tokens, grad_norm = optimizer_step(
            engine, batches, lr, lambda batch: _summed_token_loss(engine.model, batch, device, dtype)[0],
            _labelled_tokens, info)
        if global_tokens == 0:
            logger.warning("step %d has no labelled tokens (all truncated?)", step + 1)

        n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        n_samples = sum(len(b["ids"]) for b in batches)
        loss_sum, n_tokens, n_samples = all_sum([loss_sum, float(n_tokens), float(n_samples)], info)
        elapsed = time.perf_counter() - started
        loss = loss_sum / max(1, global_tokens)
        result.steps, result.samples_seen = step + 1, result.samples_seen + int(n_samples)
        result.losses.append(loss)
        pause = step + 1 == stop_after_step and step + 1 < total_steps
        if checkpoint_dir is not None and (pause or _checkpoint_due(step + 1, total_steps, config)):
            state.step, state.losses, state.samples_seen = result.steps, result.losses, result.samples_seen
            save_checkpoint(checkpoint_dir, state, model, engine, keep=config.keep_checkpoints, info=info)
        if info.is_main:
            _report(step + 1, total_steps, {
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "samples_per_s": n_samples / elapsed,
                "tokens_per_s": n_tokens / elapsed,
                "data_wait_fraction": data_wait / elapsed,  # share of the step spent waiting for batches
            }, on_step)
        if pause:
            result.completed = False
            return result

    # -- save ----------------------------------------------------------------
    result.trainable_checksum = _replicas_agree(model, info)
    if info.is_main:
        _save(model, processor, config, result)
    barrier(info)
    return result


def at_world_size(config: StageConfig, world_size: int) -> StageConfig:
    """``config`` at the real world size; refused (naming the numbers) when the global batch cannot be met."""
    if config.world_size == world_size:
        return config
    try:
        return StageConfig(**(config.model_dump() | {"world_size": world_size}))
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"{world_size} processes cannot train stage {config.stage!r}: {reasons}") from None


def _replicas_agree(model: torch.nn.Module, info: DistInfo) -> float:
    """A checksum of the trainable weights; with several processes, a divergence between them is an error."""
    checksum = float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))
    if info.world_size > 1:
        gathered: list[float] = [0.0] * info.world_size
        dist.all_gather_object(gathered, checksum)
        if len(set(gathered)) != 1:
            raise RuntimeError(f"data-parallel replicas diverged: trainable-weight checksums {gathered}")
    return checksum


def _checkpoint_due(step: int, total_steps: int, config: StageConfig) -> bool:
    """Every ``checkpoint_every`` steps, but not after the last one (the saved model is the result)."""
    return config.checkpoint_every is not None and step % config.checkpoint_every == 0 and step < total_steps


def _summed_token_loss(
    model: LlavaForConditionalGeneration, batch: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over the labelled tokens, and how many there are."""
    pixel_values = batch["pixel_values"]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            pixel_values=pixel_values.to(device) if pixel_values is not None else None,
            use_cache=False,
        ).logits
    labels = batch["labels"][:, 1:].to(device)  # token t predicts token t + 1
    loss = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((labels != IGNORE_INDEX).sum())


def _labelled_tokens(batch: dict[str, Any]) -> int:
    """The tokens a micro-batch's loss is summed over (token t predicts t + 1)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def _report(step: int, total_steps: int, metrics: dict[str, float], on_step: StepCallback | None) -> None:
    """All per-step logging happens here."""
    logger.info(
        "step %d/%d loss %.4f lr %.3g grad_norm %.3f %.1f samples/s",
        step, total_steps, metrics["loss"], metrics["lr"], metrics["grad_norm"], metrics["samples_per_s"],
    )
    if on_step is not None:
        on_step(step, metrics)


def _save(model: LlavaForConditionalGeneration, processor: Any, config: StageConfig, result: TrainResult) -> None:
    out_dir = result.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors, the only format transformers v5 writes
    processor.save_pretrained(out_dir)
    state = {
        "config": config.model_dump(),
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "result": asdict(result) | {"out_dir": str(out_dir)},
    }
    (out_dir / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
