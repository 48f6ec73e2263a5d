"""Two-stage LLaVA training: align (projector only), then finetune (projector + LLM).

Example::

    from bettersynth.train import defaults_for, train_stage

    aligned = train_stage(base_dir, pretrain_records, image_root, defaults_for("align"), out / "align")
    tuned = train_stage(aligned.out_dir, sft_records, image_root, defaults_for("finetune"), out / "finetune",
                        checkpoint_dir=out / "ckpt-finetune")  # resumes from the newest checkpoint there
"""

from bettersynth.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from bettersynth.train.config import STAGE_DEFAULTS, Stage, StageConfig, defaults_for, resolve_dtype
from bettersynth.train.data import IGNORE_INDEX, TEMPLATES, LlavaCollator, LlavaDataset, Prompt, encode
from bettersynth.train.freeze import ParamCounts, count_params, freeze_for_stage, part_modules
from bettersynth.train.schedule import SCHEDULES, cosine_lr, warmup_steps_for
from bettersynth.train.seeds import SeedDecision, SeedSelection, select_seeds
from bettersynth.train.trainer import STAGE_TEMPLATE, TrainResult, plan_steps, train_stage

__all__ = [
    "IGNORE_INDEX", "SCHEDULES", "STAGE_DEFAULTS", "STAGE_TEMPLATE", "TEMPLATES",
    "LlavaCollator", "LlavaDataset", "ParamCounts", "Prompt", "SeedDecision", "SeedSelection", "Stage",
    "StageConfig", "TrainResult", "TrainerState", "cosine_lr", "count_params", "defaults_for", "encode",
    "freeze_for_stage", "latest_checkpoint", "load_checkpoint", "part_modules", "plan_steps", "resolve_dtype",
    "save_checkpoint", "select_seeds", "train_stage", "warmup_steps_for",
]
