"""The proxy comparison: shipped recipes through the same KFP pipeline, on models that work.

Why: a newcomer should see the loop's point in numbers: a cleaner dataset
variant trains a better model, and a soup is at least as good as its
ingredients. Everything here runs offline on a CPU: the proxy world, its
models (trained by ``scorer.py``, ``base_model.py`` and the platform's own
``train_stage``), then one ``data_centric_loop`` run per recipe through
``kfp.local``, logged to MLflow like the quickstart, and a closing table.

The answer key (``world_labels.json``) is read only by ``label_report`` after
the runs, to say how clean each variant really was; no step sees it.

Example::

    result = run_proxy(ProxyConfig(workspace=Path("proxy-ws")))
    print(format_table(result))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
import yaml

from bettersynth.data.jsonl import read_jsonl
from bettersynth.data.llava import dj_to_llava
from bettersynth.data.sample import Sample
from bettersynth.demo.proxy.base_model import LMConfig, train_language_model
from bettersynth.demo.proxy.scorer import ScorerConfig, pair_similarities, threshold_from_clean, train_scorer
from bettersynth.demo.proxy.world import ProxyWorldConfig, ProxyWorldPaths, build_proxy_world, read_pairs
from bettersynth.demo.world import all_texts
from bettersynth.registry import Registry

log = logging.getLogger(__name__)

EXPERIMENT = "bettersynth-proxy"
MODELS_FILE = "proxy_models.json"  # what was trained, how long it took, the calibrated threshold

# Training settings for the proxy (CPU, minutes). The cap is the challenge rule at toy
# scale: the seed set holds twice as many pairs, so every variant trains on up to
# `sample_cap` samples and a filter changes which samples train, not how many steps run.
TRAIN_PLAN: dict[str, Any] = {
    "align": {"global_batch_size": 16, "per_device_batch_size": 16, "num_epochs": 6, "learning_rate": 3e-3,
              "max_length": 128},
    "finetune": {"global_batch_size": 16, "per_device_batch_size": 16, "num_epochs": 4, "learning_rate": 1e-3,
                 "max_length": 192},
    "sample_cap": 320,
    "seed_selection": {"decide_after_steps": 1},  # margin inf: every seed survives (the soup needs them all)
}


@dataclass(frozen=True)
class RecipeSpec:
    """A shipped recipe: the filter round, and the share of kept samples the captioner rewrites."""

    description: str
    filter_ops: list[dict[str, Any]]
    caption_fraction: float = 0.0


RecipeFactory = Callable[[float], RecipeSpec]  # calibrated similarity threshold -> recipe
RECIPES: Registry[RecipeFactory] = Registry("proxy recipe")


@RECIPES.register("no-filter")
def _no_filter(threshold: float) -> RecipeSpec:
    # min_score -1 keeps every pair (cosine >= -1) but still records the scores in MLflow.
    return RecipeSpec("every seed pair (scored, nothing dropped)",
                      [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0, "max_score": 1.0}}])


@RECIPES.register("similarity")
def _similarity(threshold: float) -> RecipeSpec:
    return RecipeSpec(f"words_num >= 10, CLIP similarity >= {threshold}", [
        {"words_num_filter": {"min_num": 10}},
        {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": threshold, "max_score": 1.0}},
    ])


@RECIPES.register("similarity-recaption")
def _similarity_recaption(threshold: float) -> RecipeSpec:
    spec = _similarity(threshold)
    return RecipeSpec(spec.description + ", then 50 % re-captioned", spec.filter_ops, caption_fraction=0.5)


@dataclass
class ProxyConfig:
    workspace: Path = Path("proxy")
    world: ProxyWorldConfig = field(default_factory=ProxyWorldConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    recipes: tuple[str, ...] = ("no-filter", "similarity", "similarity-recaption")
    train_plan: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(TRAIN_PLAN)))
    clean_keep: float = 0.95  # share of clean calibration pairs the similarity threshold keeps
    soup_methods: tuple[str, ...] = ("uniform", "greedy")
    profile: str = "k8s/profiles/generic.yaml"
    registered_model: str = "bettersynth-proxy-vlm"
    experiment: str = EXPERIMENT
    tracking_uri: str | None = None


@dataclass
class ProxyModels:
    world: ProxyWorldPaths
    model_root: Path  # clip/, lm/, llava-base/, captioner/
    threshold: float
    timings: dict[str, float]
    scorer_losses: list[float]


def prepare_models(config: ProxyConfig) -> ProxyModels:
    """Build the proxy world and train its models (scorer, LM, LLaVA base, captioner), in that order."""
    from bettersynth.models.builder import build_llava
    from bettersynth.train import StageConfig, train_stage

    workspace = Path(config.workspace).resolve()
    timings: dict[str, float] = {}
    started = time.monotonic()
    world = build_proxy_world(workspace / "data" / "proxy", config.world)
    timings["world"] = time.monotonic() - started
    models = workspace / "models" / "proxy"
    captions = [text for _, text in read_pairs(world.scorer_jsonl)]
    vocab = all_texts(world.world) + captions
    scorer = train_scorer(world.scorer_jsonl, vocab, models / "clip", config.scorer)
    timings["scorer"] = scorer.seconds
    lm = train_language_model(captions, json.loads(world.chat_json.read_text()), vocab, models / "lm", config.lm)
    timings["lm"] = lm.seconds
    mark = time.monotonic()
    build_llava(models / "clip", models / "lm", models / "llava-base", seed=config.lm.seed)
    # The re-captioner: the base aligned on the clean split, as BLIP is trained on clean captions.
    records = [dj_to_llava(s) for s in read_jsonl(world.scorer_jsonl) if isinstance(s, Sample)]
    align = StageConfig.for_stage("align", **{**config.train_plan["align"], "num_epochs": 2, "seed": 0})
    train_stage(models / "llava-base", records, world.scorer_jsonl.parent, align, models / "captioner")
    timings["base_and_captioner"] = time.monotonic() - mark
    threshold = threshold_from_clean(pair_similarities(models / "clip", read_pairs(world.calibration_jsonl)),
                                     keep=config.clean_keep)
    result = ProxyModels(world, models, threshold, timings, scorer.losses)
    (models / MODELS_FILE).write_text(json.dumps(
        {"threshold": threshold, "timings": timings, "scorer_losses": scorer.losses, "lm_losses": lm.losses}, indent=2))
    return result


def write_recipe_files(name: str, spec: RecipeSpec, folder: Path) -> tuple[Path, Path]:
    """The filter and caption recipe YAMLs of one shipped recipe (Data-Juicer format)."""
    folder.mkdir(parents=True, exist_ok=True)
    filter_path, caption_path = folder / f"{name}_filter.yaml", folder / f"{name}_caption.yaml"
    filter_path.write_text(yaml.safe_dump({"name": name, "process": spec.filter_ops}, sort_keys=False))
    caption = [{"image_captioning_mapper": {"hf_img2seq": "captioner", "prompt": "<image>", "caption_num": 1,
                                            "keep_original_sample": False, "max_new_tokens": 40,
                                            "temperature": 0.3}}]
    caption_path.write_text(yaml.safe_dump({"name": f"{name}-caption", "process": caption}, sort_keys=False))
    return filter_path, caption_path


def run_pipeline(config: ProxyConfig, models: ProxyModels, name: str, spec: RecipeSpec):
    """One ``data_centric_loop`` run through ``kfp.local`` for one recipe; returns its RunSummary."""
    from kfp import local

    from bettersynth.pipeline_loader import load_pipeline_module, repo_root
    from bettersynth.placement import load_profile
    from bettersynth.quickstart import EXPECTED_LOCAL_WARNINGS, StepLog
    from bettersynth.summary import collect_summary
    from bettersynth.tracking import PARENT_RUN_ENV, ensure_experiment, local_tracking_uri
    from bettersynth.versioning import ensure_dvc_project

    for message in EXPECTED_LOCAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    started = time.monotonic()
    workspace = Path(config.workspace).resolve()
    ensure_dvc_project(workspace)
    filter_recipe, caption_recipe = write_recipe_files(name, spec, workspace / "recipes" / "proxy")
    train_config = workspace / "recipes" / "proxy" / "train.yaml"
    train_config.write_text(yaml.safe_dump(config.train_plan, sort_keys=False))
    tracking_uri = config.tracking_uri or local_tracking_uri(workspace)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(config.experiment, workspace / "mlruns")
    pipeline = load_pipeline_module().build_pipeline(load_profile(repo_root() / config.profile), config.soup_methods)
    world = models.world.world
    arguments = dict(
        workspace=str(workspace), seed_dataset=str(world.seed_jsonl.parent), filter_recipe=str(filter_recipe),
        caption_recipe=str(caption_recipe), model_root=str(models.model_root),
        base_model=str(models.model_root / "llava-base"), instruct_data=str(world.instruct_json),
        train_config=str(train_config), textvqa_dir=str(world.textvqa.folder), mmbench_tsv=str(world.mmbench_tsv),
        heldout_textvqa_dir=str(world.heldout_textvqa.folder), heldout_mmbench_tsv=str(world.heldout_mmbench_tsv),
        variant=f"proxy-{name}", caption_fraction=spec.caption_fraction, seeds=list(config.seeds),
        registered_model=config.registered_model,
    )
    with mlflow.start_run(run_name=f"proxy-{name}", experiment_id=experiment_id) as parent:
        mlflow.log_params({k: v for k, v in arguments.items() if not isinstance(v, list)}
                          | {"seeds": config.seeds, "recipe.name": name, "similarity_threshold": models.threshold})
        mlflow.set_tag("proxy.recipe", name)
        os.environ.setdefault("BETTERSYNTH_CACHE_DIR", str(workspace / ".cache" / "scores"))
        os.environ.update({"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_ID": experiment_id,
                           PARENT_RUN_ENV: parent.info.run_id})
        log_path = workspace / "local_outputs" / f"pipeline-{parent.info.run_id}.log"
        try:
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workspace / "local_outputs"))
            with StepLog(log_path, sys.stdout) as stream, contextlib.redirect_stdout(stream):
                try:
                    pipeline(**arguments)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\nThe failing step's traceback is in {log_path}") from None
        finally:
            for variable in ("MLFLOW_EXPERIMENT_ID", PARENT_RUN_ENV):
                os.environ.pop(variable, None)
        elapsed = time.monotonic() - started
        mlflow.log_metric("wall_seconds", elapsed)
    return collect_summary(parent.info.run_id, config.registered_model, workspace, elapsed)


@dataclass
class RecipeRow:
    recipe: str
    description: str
    kept: int  # samples in the trained variant
    finetunes: dict[str, dict[str, float]]  # seed label -> scores
    soups: dict[str, dict[str, float]]  # soup method -> scores
    parent_run_id: str
    seconds: float
    labels: dict[str, Any] = field(default_factory=dict)  # answer-key audit, filled after the runs

    def mean(self, metric: str) -> float:
        return statistics.fmean(scores[metric] for scores in self.finetunes.values())


METRICS = ("textvqa", "mmbench_circular")


def _row(name: str, spec: RecipeSpec, summary) -> RecipeRow:
    kept = next((d["kept"] + d.get("added_kept", 0) for d in summary.datasets if d["step"] == "caption"), 0)
    finetunes, soups = {}, {}
    for model in summary.models:
        scores = {metric: float(model[metric] or 0.0) for metric in METRICS}
        (soups if model["model"].startswith("soup-") else finetunes)[model["model"]] = scores
    return RecipeRow(name, spec.description, kept, finetunes, soups, summary.parent_run_id, summary.wall_seconds)


def label_report(world: ProxyWorldPaths, variant_dir: Path) -> dict[str, Any]:
    """How many samples of a variant carry corrupted captions (reads the answer key; audit only)."""
    labels = json.loads(world.world.labels.read_text(encoding="utf-8"))
    samples = [s for s in read_jsonl(variant_dir / "samples.jsonl") if isinstance(s, Sample)]
    sources = [s.meta.get("provenance", {}).get("source_id", s.id) for s in samples]
    corrupted = sum(1 for sid, s in zip(sources, samples) if labels[sid]["corrupted"] and sid == s.id)
    return {"samples": len(samples), "corrupted": corrupted, "recaptioned": sum(sid != s.id for sid, s in zip(sources, samples))}


def run_proxy(config: ProxyConfig, models: ProxyModels | None = None) -> dict[str, Any]:
    """Prepare the models (unless given), run every recipe, log the comparison to MLflow."""
    started = time.monotonic()
    unknown = [name for name in config.recipes if name not in RECIPES.names()]
    if unknown:
        raise ValueError(f"recipes: unknown {unknown}; known: {RECIPES.names()}")
    models = models or prepare_models(config)
    rows = []
    for name in config.recipes:
        spec = RECIPES.get(name)(models.threshold)
        rows.append(_row(name, spec, run_pipeline(config, models, name, spec)))
    result = {"rows": rows, "threshold": models.threshold, "timings": dict(models.timings),
              "wall_seconds": time.monotonic() - started}
    _log_comparison(config, result)
    return result


def _log_comparison(config: ProxyConfig, result: dict[str, Any]) -> None:
    """One ``proxy-comparison`` run with every recipe's mean, best soup and the table."""
    with mlflow.start_run(run_name="proxy-comparison", experiment_id=mlflow.get_experiment_by_name(
            config.experiment).experiment_id):
        mlflow.log_params({"seeds": config.seeds, "recipes": ",".join(config.recipes),
                           "similarity_threshold": result["threshold"]})
        for row in result["rows"]:
            for metric in METRICS:
                mlflow.log_metric(f"{row.recipe}/finetune_mean/{metric}", row.mean(metric))
                for method, scores in row.soups.items():
                    mlflow.log_metric(f"{row.recipe}/{method}/{metric}", scores[metric])
            mlflow.log_metric(f"{row.recipe}/kept", row.kept)
        mlflow.log_metrics({f"prepare/{k}_seconds": v for k, v in result["timings"].items()})
        mlflow.log_metric("wall_seconds", result["wall_seconds"])
        mlflow.log_text(format_table(result), "comparison.txt")
        mlflow.log_dict({"rows": [asdict(row) for row in result["rows"]]}, "comparison.json")


def format_table(result: dict[str, Any]) -> str:
    """Recipe | kept | TextVQA / MMBench-circular per seed, seed mean, and per soup."""
    lines = [f"similarity threshold (95 % of clean held-out pairs kept): {result['threshold']}",
             f"{'recipe':<22}{'kept':>6}  {'model':<14}{'TextVQA':>9}{'MMBench':>9}"]
    for row in result["rows"]:
        entries = [(label, scores) for label, scores in sorted(row.finetunes.items())]
        entries.append(("seed mean", {m: row.mean(m) for m in METRICS}))
        entries += [(method, scores) for method, scores in sorted(row.soups.items())]
        for i, (label, scores) in enumerate(entries):
            head = f"{row.recipe:<22}{row.kept:>6}" if i == 0 else " " * 28
            lines.append(f"{head}  {label:<14}{scores['textvqa']:>9.2f}{scores['mmbench_circular']:>9.2f}")
    return "\n".join(lines)
