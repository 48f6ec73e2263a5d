"""One shipped recipe through the real ``data_centric_loop`` pipeline, via ``kfp.local``.

Why here and not in the quickstart: the proxy runs the pipeline once per
recipe on one prepared world and set of models, and must prove that the
world's answer key (``world_labels.json``) stays out of every step. Two
guards do that: ``pipeline_arguments`` never names a path that holds the key
(only the DVC workspace root, which the version step writes into, contains it
at all), and ``sealed`` moves the key out of the workspace while the pipeline
runs, so no step could read it even by walking the tree.

Example::

    with sealed(models.world.world.labels):
        summary = run_pipeline(config, models, "similarity", RECIPES.get("similarity")(models.threshold))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml

from bettersynth_demo.proxy.recipes import RecipeSpec, write_recipe_files

if TYPE_CHECKING:
    from bettersynth.reports.summary import RunSummary
    from bettersynth_demo.proxy.config import ProxyConfig, ProxyModels

# kfp.local runs two steps at a time (the seeds' ParallelFor); each torch process would
# start one thread per core, and on 2 cores 4 threads thrash in OpenMP barriers (measured:
# ~1 optimizer step/s instead of ~30). Each step gets its share of the cores instead.
STEP_ENV = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
WORKSPACE_ARGUMENT = "workspace"  # the DVC project root: written by version_dataset, never read for data


def pipeline_arguments(config: ProxyConfig, models: ProxyModels, name: str, spec: RecipeSpec,
                       filter_recipe: Path, caption_recipe: Path, train_config: Path) -> dict[str, Any]:
    """The ``data_centric_loop`` arguments for one recipe: the seed set, models, benchmarks, settings."""
    world = models.world.world
    return {
        "workspace": str(Path(config.workspace).resolve()), "seed_dataset": str(world.seed_jsonl.parent),
        "filter_recipe": str(filter_recipe), "caption_recipe": str(caption_recipe),
        "model_root": str(models.model_root), "base_model": str(models.base_model),
        "instruct_data": str(world.instruct_json), "train_config": str(train_config),
        "textvqa_dir": str(world.textvqa.folder), "mmbench_tsv": str(world.mmbench_tsv),
        "heldout_textvqa_dir": str(world.heldout_textvqa.folder), "heldout_mmbench_tsv": str(world.heldout_mmbench_tsv),
        "variant": f"proxy-{name}", "caption_fraction": spec.caption_fraction, "seeds": list(config.seeds),
        "registered_model": config.registered_model,
    }


def paths_reaching(arguments: dict[str, Any], target: Path) -> list[str]:
    """Names of the arguments that are ``target`` or a folder holding it (the audit behind the guard)."""
    target = Path(target).resolve()
    hits = []
    for key, value in arguments.items():
        if isinstance(value, str) and Path(value).is_absolute():
            path = Path(value).resolve()
            if path == target or path in target.parents:
                hits.append(key)
    return hits


@contextlib.contextmanager
def sealed(answer_key: Path) -> Iterator[None]:
    """Move ``answer_key`` to a private folder outside the workspace for the block, then put it back.

    A run killed inside the block loses the file; ``build_proxy_world`` with
    the same config writes it again, byte for byte.
    """
    answer_key = Path(answer_key)
    if not answer_key.is_file():
        raise FileNotFoundError(f"answer key {answer_key} is missing; build_proxy_world writes it again")
    vault = Path(tempfile.mkdtemp(prefix="bettersynth-answer-key-"))
    shutil.move(answer_key, vault / answer_key.name)
    try:
        yield
    finally:
        shutil.move(vault / answer_key.name, answer_key)
        vault.rmdir()


def run_pipeline(config: ProxyConfig, models: ProxyModels, name: str, spec: RecipeSpec) -> RunSummary:
    """One ``data_centric_loop`` run through ``kfp.local`` for one recipe; returns its RunSummary."""
    from bettersynth.platform.local_run import run_locally
    from bettersynth.platform.pipeline_loader import load_pipeline_module, repo_root
    from bettersynth.platform.placement import load_profile
    from bettersynth.reports.summary import collect_summary
    from bettersynth.tracking.runs import ensure_experiment, local_tracking_uri
    from bettersynth.versioning.dvc import ensure_dvc_project

    started = time.monotonic()
    workspace = Path(config.workspace).resolve()
    ensure_dvc_project(workspace)
    filter_recipe, caption_recipe = write_recipe_files(name, spec, workspace / "recipes" / "proxy")
    train_config = workspace / "recipes" / "proxy" / "train.yaml"
    train_config.write_text(yaml.safe_dump(config.train_plan, sort_keys=False))
    arguments = pipeline_arguments(config, models, name, spec, filter_recipe, caption_recipe, train_config)
    leaks = [key for key in paths_reaching(arguments, models.world.world.labels) if key != WORKSPACE_ARGUMENT]
    if leaks:
        raise ValueError(f"pipeline arguments {leaks} reach the answer key {models.world.world.labels}")
    tracking_uri = config.tracking_uri or local_tracking_uri(workspace)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(config.experiment, workspace / "mlruns")
    pipeline = load_pipeline_module().build_pipeline(load_profile(repo_root() / config.profile).for_local_run(),
                                                     config.soup_methods)
    params = ({k: v for k, v in arguments.items() if not isinstance(v, list)}
              | {"seeds": config.seeds, "recipe.name": name, "similarity_threshold": models.threshold})
    run = run_locally(pipeline, arguments, workspace=workspace, tracking_uri=tracking_uri, experiment_id=experiment_id,
                      run_name=f"proxy-{name}", params=params, tags={"proxy.recipe": name}, step_env=STEP_ENV,
                      guard=sealed(models.world.world.labels), started=started)
    return collect_summary(run.run_id, config.registered_model, workspace, run.seconds)
