"""The local quickstart: demo world + tiny models + one KFP pipeline run through ``kfp.local``.

Why: a newcomer should see the whole loop (data → DVC → training → scores →
soup → registry) run for real on one CPU machine, through the very pipeline a
cluster runs, before touching a GPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mlflow

from bettersynth.platform.local_run import run_locally
from bettersynth.platform.pipeline_loader import load_pipeline_module, repo_root
from bettersynth.platform.placement import load_profile
from bettersynth.reports.summary import RunSummary, collect_summary
from bettersynth.tracking.runs import ensure_experiment, local_tracking_uri, require_tracking_server
from bettersynth.versioning.dvc import ensure_dvc_project
from bettersynth_demo.models import BASE_MODELS, build_tiny_captioner, build_tiny_clip
from bettersynth_demo.world import WorldConfig, all_texts, build_world

log = logging.getLogger(__name__)

EXPERIMENT = "bettersynth-quickstart"


@dataclass
class QuickstartConfig:
    workspace: Path = Path(".")  # DVC project; gets data/, models/, mlflow.db, mlruns/, local_outputs/
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one finetune per seed
    arch: Literal["llava", "mgm"] = "llava"  # the pico base VLM: LLaVA, or Mini-Gemini (aux ConvNeXt + mining)
    world: WorldConfig = field(default_factory=WorldConfig)  # size of the demo corpus
    caption_fraction: float = 0.2  # share of samples the captioner rewrites
    soup_methods: tuple[str, ...] = ("uniform", "greedy")
    profile: str = "k8s/profiles/generic.yaml"  # node pools (compiled in, ignored by kfp.local)
    filter_recipe: str = "recipes/quickstart_filter.yaml"
    caption_recipe: str = "recipes/quickstart_caption.yaml"
    train_config: str = "configs/train/quickstart.yaml"
    registered_model: str = "bettersynth-vlm"
    experiment: str = EXPERIMENT
    tracking_uri: str | None = None  # an MLflow server; default: sqlite mlflow.db in the workspace
    eval_shards: int = 1  # > 1: each evaluation split over that many tasks, merged exactly


def prepare_inputs(workspace: Path, world_config: WorldConfig, arch: str = "llava"):
    """Build the demo world and the tiny models (offline, deterministic, seconds); the base VLM is ``<arch>-base``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # three pico checkpoints don't need progress bars
    world = build_world(workspace / "data" / "demo", world_config)
    texts = all_texts(world)
    models = workspace / "models"
    build_tiny_clip(models / "clip", texts)
    build_tiny_captioner(models / "captioner", texts)
    BASE_MODELS[arch](models / f"{arch}-base", texts)
    return world, models


def run_quickstart(config: QuickstartConfig) -> RunSummary:
    """Run the whole loop locally and return what MLflow recorded about it."""
    started = time.monotonic()
    repo = repo_root()
    workspace = Path(config.workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    tracking_uri = config.tracking_uri or local_tracking_uri(workspace)
    mlflow.set_tracking_uri(tracking_uri)
    require_tracking_server(tracking_uri)  # a server that is down costs seconds here, before any work
    world, models = prepare_inputs(workspace, config.world, config.arch)
    log.info("demo world and tiny models ready in %.1fs", time.monotonic() - started)

    ensure_dvc_project(workspace)
    experiment_id = ensure_experiment(config.experiment, workspace / "mlruns")
    pipeline = load_pipeline_module().build_pipeline(
        load_profile(repo / config.profile).for_local_run(), config.soup_methods, eval_shards=config.eval_shards
    )
    arguments = dict(
        workspace=str(workspace),
        seed_dataset=str(world.seed_jsonl.parent),
        filter_recipe=str(repo / config.filter_recipe),
        caption_recipe=str(repo / config.caption_recipe),
        model_root=str(models),
        base_model=str(models / f"{config.arch}-base"),
        instruct_data=str(world.instruct_json),
        train_config=str(repo / config.train_config),
        textvqa_dir=str(world.textvqa.folder),
        mmbench_tsv=str(world.mmbench_tsv),
        heldout_textvqa_dir=str(world.heldout_textvqa.folder),
        heldout_mmbench_tsv=str(world.heldout_mmbench_tsv),
        caption_fraction=config.caption_fraction,
        seeds=list(config.seeds),
        registered_model=config.registered_model,
    )
    run = run_locally(pipeline, arguments, workspace=workspace, tracking_uri=tracking_uri,
                      experiment_id=experiment_id, run_name="quickstart", started=started,
                      params={k: v for k, v in arguments.items() if not isinstance(v, list)} | {"seeds": config.seeds})
    return collect_summary(run.run_id, config.registered_model, workspace, run.seconds)
