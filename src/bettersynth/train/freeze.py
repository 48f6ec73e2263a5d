"""Which parts of a LLaVA model train in each stage.

Why: stage 1 (align) teaches only the projector to map frozen vision features
into the frozen LLM's embedding space; stage 2 (finetune) also trains the LLM.
The vision towers never train in this recipe; Mini-Gemini's patch info
mining trains with the projector in both stages. Naming the parts in one table
keeps the rule visible and testable.

Example::

    counts = freeze_for_stage(model, "finetune")
    counts.trainable  # projector + language model + lm_head parameters
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bettersynth.train.config import Stage

# Attribute paths on ``LlavaForConditionalGeneration`` (transformers v5 layout).
PARTS: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower",),
    "projector": ("model.multi_modal_projector",),
    "language_model": ("model.language_model", "lm_head"),  # lm_head belongs to the LLM
    "aux_tower": ("model.aux_tower",),  # Mini-Gemini's high-res ConvNeXt (never trains)
    "mining": ("model.patch_mining",),  # Mini-Gemini's patch info mining (trains with the projector)
}
OPTIONAL_PARTS = frozenset({"aux_tower", "mining"})  # only Mini-Gemini-style models have them

TRAINABLE_PARTS: dict[str, tuple[str, ...]] = {
    "align": ("projector", "mining"),
    "finetune": ("projector", "mining", "language_model"),
}


@dataclass(frozen=True)
class ParamCounts:
    trainable: int
    total: int


def part_modules(model: nn.Module, part: str) -> list[nn.Module]:
    """The submodules that make up ``part`` (see ``PARTS``); a missing one is an error unless optional."""
    modules = []
    for path in PARTS[part]:
        try:
            modules.append(model.get_submodule(path))
        except AttributeError:
            if part in OPTIONAL_PARTS:
                continue
            raise ValueError(f"model {type(model).__name__} has no {path!r} (part {part!r})") from None
    return modules


def freeze_for_stage(model: nn.Module, stage: Stage) -> ParamCounts:
    """Freeze everything, then unfreeze the stage's parts; returns the parameter counts."""
    if stage not in TRAINABLE_PARTS:
        raise ValueError(f"stage {stage!r} unknown; expected one of {sorted(TRAINABLE_PARTS)}")
    model.requires_grad_(False)
    for part in TRAINABLE_PARTS[stage]:
        for module in part_modules(model, part):
            module.requires_grad_(True)
    return count_params(model)


def count_params(model: nn.Module) -> ParamCounts:
    """Unique parameters (tied weights counted once), trainable and total."""
    params = {id(p): p for p in model.parameters()}.values()
    return ParamCounts(
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
    )
