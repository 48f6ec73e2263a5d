"""Two-stage LLaVA training: align (projector only), then finetune (projector + LLM).

Example::

    from bettersynth.train import defaults_for, train_stage

    aligned = train_stage(base_dir, pretrain_records, image_root, defaults_for("align"), out / "align")
    tuned = train_stage(aligned.out_dir, sft_records, image_root, defaults_for("finetune"), out / "finetune",
                        checkpoint_dir=out / "ckpt-finetune")  # resumes from the newest checkpoint there
"""

import importlib
from typing import Any

# Exported name -> its module. Loaded on first use (PEP 562): the settings and the seed decision
# (what the select-seeds step needs) load without the trainer's torch + transformers stack,
# about 5 s a process on 2 cores.
_EXPORTS = {
    **dict.fromkeys(("TrainerState", "latest_checkpoint", "load_checkpoint", "save_checkpoint"), "checkpoint"),
    **dict.fromkeys(("STAGE_DEFAULTS", "Stage", "StageConfig", "defaults_for"), "config"),
    **dict.fromkeys(("ParamCounts", "count_params", "freeze_for_stage", "part_modules"), "freeze"),
    **dict.fromkeys(("SCHEDULES", "cosine_lr", "warmup_steps_for"), "schedule"),
    **dict.fromkeys(("SeedDecision", "SeedSelection", "select_seeds"), "seeds"),
    **dict.fromkeys(("STAGE_TEMPLATE", "TrainResult", "plan_steps", "train_stage"), "trainer"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
