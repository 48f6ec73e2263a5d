"""What a proxy comparison runs with: its settings, and the models it trained.

Why: the comparison (``experiment``) and the per-recipe pipeline launch
(``pipeline_run``) both read these; here neither has to import the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bettersynth_demo.proxy.base_model import LMConfig
from bettersynth_demo.proxy.scorer import ScorerConfig
from bettersynth_demo.proxy.world import ProxyWorldConfig, ProxyWorldPaths, build_proxy_world

EXPERIMENT = "bettersynth-proxy"
SEEDS = (0, 1, 2, 3, 4)  # independent seeds per recipe: what the paired bootstrap resamples
WORLD_DIR = Path("data") / "proxy"  # the proxy world, relative to the workspace
MODELS_FILE = "proxy_models.json"  # what was trained, how long it took, the calibrated threshold

# Training settings for the proxy (CPU, minutes). The cap is the challenge rule at toy
# scale: the seed set holds twice as many pairs, so every variant trains on up to
# `sample_cap` samples and a filter changes which samples train, not how many steps run.
# Stage 2 runs at a tenth of stage 1's learning rate (the real recipe: 2e-5 after 1e-3), so it
# builds on the projector stage 1 aligned; at stage 1's rate it relearnt the projector from the
# stage-2 set alone and every stage-1 variant, none included, scored alike.
TRAIN_PLAN: dict[str, Any] = {
    "align": {"global_batch_size": 8, "per_device_batch_size": 8, "num_epochs": 15, "learning_rate": 3e-3,
              "max_length": 128},
    "finetune": {"global_batch_size": 16, "per_device_batch_size": 16, "num_epochs": 4, "learning_rate": 3e-4,
                 "max_length": 192},
    "sample_cap": 640,
    # Every seed trains a whole stage 1 (15 epochs x 640 / 8 = 1200 steps at the cap) and its own stage 2
    # (finetune_from "own"): the seeds are independent draws of the whole recipe, so their spread is what a
    # gain has to beat. Margin inf: every seed survives. (With "best" every stage 2 started from one stage 1,
    # and the comparison rested on that one draw.)
    "seed_selection": {"decide_after_steps": 1200, "window": 80},
    "finetune_from": "own",
}


# The re-captioner's one instruction-tuning stage on the clean split (projector + LM).
CAPTIONER_STAGE: dict[str, Any] = {"global_batch_size": 16, "per_device_batch_size": 16, "num_epochs": 3,
                                   "learning_rate": 1e-3, "max_length": 160, "seed": 0}


@dataclass
class ProxyConfig:
    workspace: Path = Path("proxy")
    world: ProxyWorldConfig = field(default_factory=ProxyWorldConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    seeds: list[int] = field(default_factory=lambda: list(SEEDS))  # each its own stage 1 and stage 2, every recipe
    recipes: tuple[str, ...] = ("no-filter", "similarity", "similarity-recaption")
    train_plan: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(TRAIN_PLAN)))
    captioner: dict[str, Any] = field(default_factory=lambda: dict(CAPTIONER_STAGE))  # its finetune StageConfig
    clean_keep: float = 0.95  # share of clean calibration pairs the similarity threshold keeps
    # Greedy only: with two ingredients it is the uniform soup when that scores higher on the held-out
    # split, else the better ingredient; each extra method is three more steps (soup, evaluate,
    # register), about 35 s a recipe on 2 cores.
    soup_methods: tuple[str, ...] = ("greedy",)
    profile: str = "k8s/profiles/generic.yaml"
    registered_model: str = "bettersynth-proxy-vlm"
    experiment: str = EXPERIMENT
    tracking_uri: str | None = None
    arch: Literal["llava", "mgm"] = "llava"  # the base VLM: LLaVA, or Mini-Gemini (scorer tower + ConvNeXt aux)
    # Train the scorer and the LM side by side in two one-thread processes: on 2 cores that halves their wall
    # time, where one two-thread process stalls in OpenMP barriers whenever another job shares the cores.
    prepare_in_parallel: bool = False


@dataclass
class ProxyModels:
    world: ProxyWorldPaths
    model_root: Path  # clip/, lm/, <arch>-base/, captioner/
    threshold: float
    timings: dict[str, float]
    scorer_losses: list[float]
    arch: str = "llava"  # which base the recipes train from

    @property
    def base_model(self) -> Path:
        return self.model_root / f"{self.arch}-base"

    @classmethod
    def load(cls, workspace: Path) -> ProxyModels | None:
        """The models ``prepare_models`` left in ``workspace``, or None when it has not finished there."""
        workspace = Path(workspace).resolve()
        record = workspace / "models" / "proxy" / MODELS_FILE
        if not record.is_file():
            return None
        data = json.loads(record.read_text())
        world = ProxyWorldPaths.under(workspace / WORLD_DIR)
        if not world.world.labels.is_file():  # a run killed while the key was sealed away: rebuild, byte-identical
            build_proxy_world(world.root, world.load_config())
        return cls(world, record.parent, data["threshold"], data["timings"], data["scorer_losses"],
                   data.get("arch", "llava"))
