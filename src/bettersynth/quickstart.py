"""The local quickstart: demo world + tiny models + one KFP pipeline run through ``kfp.local``.

Why: a newcomer should see the whole loop (data → DVC → training → scores →
soup → registry) run for real on one CPU machine, through the very pipeline a
cluster runs, before touching a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from bettersynth.demo.models import build_tiny_captioner, build_tiny_clip, build_tiny_llava
from bettersynth.demo.world import WorldConfig, all_texts, build_world
from bettersynth.pipeline_loader import load_pipeline_module, repo_root
from bettersynth.placement import load_profile
from bettersynth.summary import RunSummary, collect_summary
from bettersynth.tracking import PARENT_RUN_ENV, ensure_experiment, local_tracking_uri
from bettersynth.versioning import ensure_dvc_project

log = logging.getLogger(__name__)

EXPERIMENT = "bettersynth-quickstart"


@dataclass
class QuickstartConfig:
    workspace: Path = Path(".")  # DVC project; gets data/, models/, mlflow.db, mlruns/, local_outputs/
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one finetune per seed
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


class StepLog:
    """A stdout stand-in: everything goes to a log file, task status lines also to the terminal.

    Why: kfp.local prints every executor's full input/output JSON; a newcomer
    needs to see steps finishing, and the details only when something fails.
    """

    STATUS = re.compile(r"(Task|Pipeline) .* finished with status")
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, path: Path, terminal) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", encoding="utf-8")
        self.terminal = terminal
        self.pending = ""

    def write(self, text: str) -> int:
        self.file.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            plain = self.ANSI.sub("", line)
            if self.STATUS.search(plain):
                self.terminal.write(plain.strip() + "\n")
                self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def __enter__(self) -> "StepLog":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def prepare_inputs(workspace: Path, world_config: WorldConfig):
    """Build the demo world and the tiny models (offline, deterministic, seconds)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # three pico checkpoints don't need progress bars
    world = build_world(workspace / "data" / "demo", world_config)
    texts = all_texts(world)
    models = workspace / "models"
    build_tiny_clip(models / "clip", texts)
    build_tiny_captioner(models / "captioner", texts)
    build_tiny_llava(models / "llava-base", texts)
    return world, models


# kfp.local says, for every task, that cluster-only settings (GPUs, node pools,
# the project image) don't apply on one machine; that is expected here.
EXPECTED_LOCAL_WARNINGS = (".*have no effect in the current local runner.*", ".*custom or non-Python base image.*")


def run_quickstart(config: QuickstartConfig) -> RunSummary:
    """Run the whole loop locally and return what MLflow recorded about it."""
    from kfp import local

    for message in EXPECTED_LOCAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message)

    started = time.monotonic()
    repo = repo_root()
    workspace = Path(config.workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    world, models = prepare_inputs(workspace, config.world)
    log.info("demo world and tiny models ready in %.1fs", time.monotonic() - started)

    ensure_dvc_project(workspace)
    tracking_uri = config.tracking_uri or local_tracking_uri(workspace)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(config.experiment, workspace / "mlruns")
    pipeline = load_pipeline_module().build_pipeline(
        load_profile(repo / config.profile), config.soup_methods, eval_shards=config.eval_shards
    )
    arguments = dict(
        workspace=str(workspace),
        seed_dataset=str(world.seed_jsonl.parent),
        filter_recipe=str(repo / config.filter_recipe),
        caption_recipe=str(repo / config.caption_recipe),
        model_root=str(models),
        base_model=str(models / "llava-base"),
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
    with mlflow.start_run(run_name="quickstart", experiment_id=experiment_id) as parent:
        mlflow.log_params({k: v for k, v in arguments.items() if not isinstance(v, list)} | {"seeds": config.seeds})
        os.environ.setdefault("BETTERSYNTH_CACHE_DIR", str(workspace / ".cache" / "scores"))
        os.environ.update({
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            PARENT_RUN_ENV: parent.info.run_id,
        })
        log_path = workspace / "local_outputs" / f"pipeline-{parent.info.run_id}.log"
        log.info("running the pipeline through kfp.local; full step logs: %s", log_path)
        try:
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workspace / "local_outputs"))
            with StepLog(log_path, sys.stdout) as stream, contextlib.redirect_stdout(stream):
                try:
                    pipeline(**arguments)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\nThe failing step's traceback is in {log_path}") from None
        finally:
            for name in ("MLFLOW_EXPERIMENT_ID", PARENT_RUN_ENV):
                os.environ.pop(name, None)
        elapsed = time.monotonic() - started
        mlflow.log_metric("wall_seconds", elapsed)
    return collect_summary(parent.info.run_id, config.registered_model, workspace, elapsed)
