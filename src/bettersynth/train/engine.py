"""How a step's gradients become an optimizer update: plain torch (CPU, tests, any world size) or DeepSpeed ZeRO-2.

Why: the loop's math is fixed (the step's loss is the mean over every labelled
token of the *global* batch; clip; AdamW), but who holds the optimizer and how
gradients cross processes differs. ``TorchEngine`` keeps AdamW in each process
and sums gradients over the process group itself (gloo on CPU, NCCL on GPU);
``DeepSpeedEngine`` hands model, optimizer and clipping to DeepSpeed with the
JSON of ``train.deepspeed`` (ZeRO-2, optional CPU offload). Both take the
summed token loss of each micro-batch and the global label-token count, so
the trainer has one loop.

Example::

    engine = make_engine(model, params, config, DeepSpeedSettings(), dist_info())
    loss_sum, tokens, grad_norm = optimizer_step(engine, micro_batches, lr, summed_token_loss, labelled_tokens)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn

from bettersynth.train.config import StageConfig
from bettersynth.train.deepspeed import DeepSpeedSettings, deepspeed_config, require_deepspeed, use_deepspeed

OPTIMIZER_FILE = "optimizer.pt"
DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "zero"


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info(init: bool = True) -> DistInfo:
    """The real world size: an initialised process group, or torchrun's environment (joined here when ``init``)."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and init:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum over the group (identity in one process)."""
    if info.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


class Engine(Protocol):
    model: nn.Module  # what the forward pass calls

    def backward(self, summed_loss: torch.Tensor, global_tokens: int, last: bool) -> None: ...

    def step(self, lr: float) -> float: ...  # returns the gradient norm before clipping

    def save(self, folder: Path, info: DistInfo) -> None: ...  # optimizer state into a checkpoint folder

    def load(self, folder: Path) -> None: ...


class TorchEngine:
    """AdamW in every process; gradients summed over the group, then divided by the global token count."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], learning_rate: float, weight_decay: float,
                 max_grad_norm: float, info: DistInfo = DistInfo()) -> None:
        self.model, self.params, self.info = model, params, info
        self.max_grad_norm = max_grad_norm
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        self._tokens = 1

    def backward(self, summed_loss: torch.Tensor, global_tokens: int, last: bool) -> None:
        summed_loss.backward()
        self._tokens = max(1, global_tokens)

    def step(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for p in self.params:
            if self.info.world_size > 1:
                if p.grad is None:  # every rank must join the same sums
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
            if p.grad is not None:
                p.grad.div_(self._tokens)  # mean over the global batch's labelled tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def save(self, folder: Path, info: DistInfo) -> None:
        if info.is_main:  # every process holds the same optimizer state
            torch.save(self.optimizer.state_dict(), Path(folder) / OPTIMIZER_FILE)

    def load(self, folder: Path) -> None:
        state = torch.load(Path(folder) / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state)


class DeepSpeedEngine:
    """ZeRO-2 through ``deepspeed.initialize`` with the stage's JSON; DeepSpeed reduces, clips and steps.

    Micro-batch counts vary (an epoch's last global batch may be short), so the
    accumulation boundary is set explicitly on the last micro-batch of a step
    instead of counted by DeepSpeed. Each micro-batch's summed loss is scaled by
    ``world_size / global_tokens`` (DeepSpeed averages over ranks) with
    ``scale_wrt_gas=False``: the step's gradient is the global token mean.
    """

    def __init__(self, model: nn.Module, params: list[nn.Parameter], config: StageConfig,
                 settings: DeepSpeedSettings, info: DistInfo) -> None:
        deepspeed = require_deepspeed()
        device = next(model.parameters()).device.type
        if not dist.is_initialized():  # one process without torchrun: a group of one, not DeepSpeed's MPI discovery
            dist.init_process_group("nccl" if device == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
            os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's sanity check reads it; torchrun sets it
        self.info, self.ds_config = info, deepspeed_config(config, settings, device)
        client = None if "optimizer" in self.ds_config else torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=params, optimizer=client, config=self.ds_config)
        self.model = self.engine

    def backward(self, summed_loss: torch.Tensor, global_tokens: int, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(summed_loss * (self.info.world_size / max(1, global_tokens)), scale_wrt_gas=False)
        if not last:
            self.engine.step()  # a no-op off the boundary; keeps DeepSpeed's micro-step count

    def step(self, lr: float) -> float:
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save(self, folder: Path, info: DistInfo) -> None:  # collective: every rank writes its partition
        self.engine.save_checkpoint(str(Path(folder) / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, save_latest=False,
                                    exclude_frozen_parameters=True)

    def load(self, folder: Path) -> None:
        self.engine.load_checkpoint(str(Path(folder) / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_module_strict=False,
                                    load_optimizer_states=True, load_lr_scheduler_states=False)


def make_engine(model: nn.Module, params: list[nn.Parameter], config: StageConfig,
                settings: DeepSpeedSettings | None, info: DistInfo) -> Engine:
    """DeepSpeed when the settings and hardware say so (CUDA present, ``enabled`` auto/on), else plain torch."""
    settings = settings or DeepSpeedSettings()
    if use_deepspeed(settings, torch.cuda.is_available()):
        return DeepSpeedEngine(model, params, config, settings, info)
    return TorchEngine(model, params, config.learning_rate, config.weight_decay, config.max_grad_norm, info)


def optimizer_step(engine: Engine, batches: Sequence[Any], lr: float, summed_loss: Callable[[Any], torch.Tensor],
                   count: Callable[[Any], int], info: DistInfo = DistInfo()) -> tuple[float, int, float]:
    """One optimizer update over a step's micro-batches: the loop body every trainer here shares.

    The step's loss is the sum of ``summed_loss`` over the micro-batches of all
    processes divided by the sum of ``count`` over them (labelled tokens for a
    VLM stage; 1 per batch for a loss that is already a mean). Returns this
    process's loss sum, the global count, and the gradient norm before clipping.
    """
    global_count = int(all_sum([float(sum(count(b) for b in batches))], info)[0])
    loss_sum = 0.0
    for i, batch in enumerate(batches):
        loss = summed_loss(batch)
        engine.backward(loss, global_count, last=i == len(batches) - 1)
        loss_sum += loss.item()
    return loss_sum, global_count, engine.step(lr)  # reduce over processes, divide by the count, clip, AdamW


def engine_summary(engine: Any) -> str:
    return "deepspeed-zero2" if isinstance(engine, DeepSpeedEngine) else "torch"
