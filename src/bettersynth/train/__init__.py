"""Two-stage LLaVA training: align (projector only), then finetune (projector + LLM).

Example::

    from bettersynth.train import defaults_for, train_stage

    aligned = train_stage(base_dir, pretrain_records, image_root, defaults_for("align"), out / "align")
    tuned = train_stage(aligned.out_dir, sft_records, image_root, defaults_for("finetune"), out / "finetune")
"""

from bettersynth.train.config import STAGE_DEFAULTS, Stage, StageConfig, defaults_for, resolve_dtype
from bettersynth.train.data import IGNORE_INDEX, TEMPLATES, LlavaCollator, LlavaDataset, Prompt, encode
from bettersynth.train.freeze import ParamCounts, count_params, freeze_for_stage, part_modules
from bettersynth.train.schedule import SCHEDULES, cosine_lr, warmup_steps_for
from bettersynth.train.trainer import STAGE_TEMPLATE, TrainResult, plan_steps, train_stage

__all__ = [
    "IGNORE_INDEX", "SCHEDULES", "STAGE_DEFAULTS", "STAGE_TEMPLATE", "TEMPLATES",
    "LlavaCollator", "LlavaDataset", "ParamCounts", "Prompt", "Stage", "StageConfig", "TrainResult",
    "cosine_lr", "count_params", "defaults_for", "encode", "freeze_for_stage", "part_modules",
    "plan_steps", "resolve_dtype", "train_stage", "warmup_steps_for",
]
