"""The proxy comparison: shipped recipes through the same KFP pipeline, on models that work.

Why: a newcomer should see the loop's point in numbers: a cleaner dataset
variant trains a better model, and a soup is at least as good as its
ingredients. Everything here runs offline on a CPU: the proxy world, its
models (trained by ``scorer.py``, ``base_model.py`` and the platform's own
``train_stage``), then one ``data_centric_loop`` run per recipe through
``kfp.local``, logged to MLflow like the quickstart, and a closing table.

The answer key (``world_labels.json``) is read only by ``audit`` after the
runs, to say how clean each trained set really was and what share of each
corruption kind the filters removed; no step sees it (``pipeline_run.sealed``
moves it out of the workspace while the pipeline runs).

Each recipe trains every seed of ``ProxyConfig.seeds`` from its own stage 1;
the same seed trains every recipe, so the gain over no filter is paired by
seed, and the table gives its mean with a paired bootstrap 95 % interval.

Example::

    result = run_proxy(ProxyConfig(workspace=Path("proxy-ws")))
    print(format_table(result))
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl
from bettersynth.data.llava import LLAVA_IMAGE_TOKEN, dj_to_llava
from bettersynth.engine.captioning import DEFAULT_CHAT_PROMPT
from bettersynth.reports.bootstrap import GainInterval, paired_bootstrap
from bettersynth_demo.proxy.audit import filter_recall, label_report, scorer_auc
from bettersynth_demo.proxy.base_model import train_language_model
from bettersynth_demo.proxy.baselines import BASELINE_NAMES, trivial_baselines
from bettersynth_demo.proxy.config import MODELS_FILE, WORLD_DIR, ProxyConfig, ProxyModels
from bettersynth_demo.proxy.pipeline_run import run_pipeline
from bettersynth_demo.proxy.recipes import CAPTIONER, RECIPES, SCORER, RecipeSpec
from bettersynth_demo.proxy.scorer import (
    pair_similarities,
    threshold_from_clean,
    train_scorer,
)
from bettersynth_demo.proxy.world import (
    UNSEEN_CORRUPTION,
    ProxyWorldPaths,
    build_proxy_world,
    pretraining_corpus,
    pretraining_texts,
    read_pairs,
)

log = logging.getLogger(__name__)

def prepare_models(config: ProxyConfig) -> ProxyModels:
    """Build the proxy world and train its models (scorer, LM, base VLM, captioner), in that order."""
    workspace = Path(config.workspace).resolve()
    timings: dict[str, float] = {}
    started = time.monotonic()
    world = build_proxy_world(workspace / WORLD_DIR, config.world)
    timings["world"] = time.monotonic() - started
    models = workspace / "models" / "proxy"
    captions, chats = pretraining_corpus(world)
    vocab = pretraining_texts(captions, chats)
    scorer, lm = train_scorer_and_lm(world, captions, chats, vocab, models, config)
    timings["scorer"], timings["lm"] = scorer.seconds, lm.seconds
    mark = time.monotonic()
    base = build_base(config.arch, models, seed=config.lm.seed)
    if needs_captioner(config.recipes):
        train_captioner(world, base, models / CAPTIONER, config.captioner)
        timings["base_and_captioner"] = time.monotonic() - mark
    else:
        timings["base"] = time.monotonic() - mark
    threshold = threshold_from_clean(pair_similarities(models / SCORER, read_pairs(world.calibration_jsonl)),
                                     keep=config.clean_keep)
    result = ProxyModels(world, models, threshold, timings, scorer.losses, config.arch)
    (models / MODELS_FILE).write_text(json.dumps(
        {"threshold": threshold, "timings": timings, "scorer_losses": scorer.losses, "lm_losses": lm.losses,
         "arch": config.arch}, indent=2))
    return result


def needs_captioner(recipes: tuple[str, ...]) -> bool:
    """Whether any recipe re-captions (the captioner costs minutes to train; a recipe without it never loads it)."""
    return any(RECIPES.get(name)(0.0).caption_fraction > 0 for name in recipes)


def _one_thread(train, *args):
    """Run ``train`` in this worker process with one torch thread (its share of 2 cores)."""
    import torch

    torch.set_num_threads(1)
    return train(*args)


def train_scorer_and_lm(world: ProxyWorldPaths, captions: list[str], chats: list[dict[str, str]], vocab: list[str],
                        models: Path, config: ProxyConfig):
    """The scorer and the LM: one after the other, or side by side (``config.prepare_in_parallel``)."""
    if not config.prepare_in_parallel:
        return (train_scorer(world.scorer_jsonl, vocab, models / SCORER, config.scorer),
                train_language_model(captions, chats, vocab, models / "lm", config.lm))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        scorer = pool.submit(_one_thread, train_scorer, world.scorer_jsonl, vocab, models / SCORER, config.scorer)
        lm = pool.submit(_one_thread, train_language_model, captions, chats, vocab, models / "lm", config.lm)
        return scorer.result(), lm.result()


def _llava_base(models: Path, out: Path, seed: int) -> Path:
    from bettersynth.vlm.builder import build_llava

    return build_llava(models / SCORER, models / "lm", out, seed=seed)


def _mini_gemini_base(models: Path, out: Path, seed: int) -> Path:
    """A pico ConvNeXt aux tower (random weights: the proxy trains no ConvNeXt) at twice the scorer's resolution."""
    from bettersynth.vlm.aux_tower import AuxTowerSpec
    from bettersynth.vlm.builder import build_mini_gemini
    from bettersynth_demo.open_clip_models import build_tiny_open_clip

    scorer_size = json.loads((models / SCORER / "config.json").read_text())["vision_config"]["image_size"]
    aux = AuxTowerSpec.from_open_clip_dir(build_tiny_open_clip(models / "convnext", kind="convnext", seed=seed),
                                          image_size=2 * scorer_size)
    return build_mini_gemini(models / SCORER, models / "lm", aux, out, seed=seed)


BASES = {"llava": _llava_base, "mgm": _mini_gemini_base}  # --arch: the base VLM, from the scorer's tower and the LM


def build_base(arch: str, models: Path, seed: int) -> Path:
    """The base VLM every recipe trains from, at ``models/<arch>-base``."""
    return BASES[arch](models, models / f"{arch}-base", seed)


CAPTION_REQUEST = f"{LLAVA_IMAGE_TOKEN}\n{DEFAULT_CHAT_PROMPT}"  # the human turn the captioner answers


def train_captioner(world: ProxyWorldPaths, base: Path, out_dir: Path, settings: dict[str, Any]) -> Path:
    """The re-captioner: the base instruction-tuned on the clean split to describe an image.

    Why a chat model: ``image_captioning_mapper`` asks a chat VLM with its chat
    template and ``DEFAULT_CHAT_PROMPT``, as it would ask LLaVA. Trained on clean
    captions only, like BLIP on COCO, it is still a small model: it gets colours
    right but often a position or the sign's word wrong (the audit counts how
    many of its captions are exactly true).
    """
    from bettersynth.train import StageConfig, train_stage

    samples = [s for s in read_jsonl(world.scorer_jsonl) if isinstance(s, Sample)]
    records = [dj_to_llava(s, questions={s.id: CAPTION_REQUEST}) for s in samples]
    stage = StageConfig.for_stage("finetune", **settings)
    train_stage(base, records, world.scorer_jsonl.parent, stage, out_dir)
    return out_dir


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
    recall: dict[str, list[int]] = field(default_factory=dict)  # corruption kind -> [removed, total] by the filters
    dataset_hash: str = ""  # the trained variant's DVC hash: what `bettersynth data checkout` restores

    def mean(self, metric: str) -> float:
        return statistics.fmean(scores[metric] for scores in self.finetunes.values())


METRICS = ("textvqa", "mmbench_circular")
BASELINE = "no-filter"  # the recipe every other one is compared with


def gains(rows: list[RecipeRow], baseline: str = BASELINE) -> dict[str, dict[str, GainInterval]]:
    """Recipe -> metric -> the gain over ``baseline``, paired by seed (the seeds both trained)."""
    base = next((row for row in rows if row.recipe == baseline), None)
    result: dict[str, dict[str, GainInterval]] = {}
    if base is None:
        return result
    for row in rows:
        seeds = sorted(set(row.finetunes) & set(base.finetunes))
        if row is base or len(seeds) < 2:
            continue
        result[row.recipe] = {metric: paired_bootstrap([row.finetunes[s][metric] for s in seeds],
                                                       [base.finetunes[s][metric] for s in seeds])
                              for metric in METRICS}
    return result


def _row(name: str, spec: RecipeSpec, summary) -> RecipeRow:
    kept = next((d["kept"] for d in summary.datasets if d["step"] == "caption"), 0)  # originals kept + re-captions
    finetunes, soups = {}, {}
    for model in summary.models:
        scores = {metric: float(model[metric] or 0.0) for metric in METRICS}
        (soups if model["model"].startswith("soup-") else finetunes)[model["model"]] = scores
    dataset_hash = next((d.get("dataset_hash", "") for d in summary.datasets if d["step"] == "version-dataset"), "")
    return RecipeRow(name, spec.description, kept, finetunes, soups, summary.parent_run_id, summary.wall_seconds,
                     dataset_hash=dataset_hash)


def audit_variant(config: ProxyConfig, world: ProxyWorldPaths, name: str) -> dict[str, int]:
    """The answer-key audit of exactly the samples that trained (the variant after the seeded cap)."""
    from bettersynth.steps.train import pretraining_records
    from bettersynth.steps.train_plan import TrainPlan

    plan = TrainPlan.model_validate(config.train_plan)
    trained = pretraining_records(variant_dir(config, name), plan.sample_cap, plan.sample_cap_seed)
    return label_report(world, variant_dir(config, name), {record["id"] for record in trained})


def variant_dir(config: ProxyConfig, name: str) -> Path:
    """Where ``version_dataset`` put the recipe's variant (the bytes that trained)."""
    from bettersynth.versioning.dvc import VARIANTS_DIR

    return Path(config.workspace).resolve() / VARIANTS_DIR / f"proxy-{name}"


def run_proxy(config: ProxyConfig, models: ProxyModels | None = None) -> dict[str, Any]:
    """Prepare the models (unless given), run every recipe, log the comparison to MLflow."""
    started = time.monotonic()
    unknown = [name for name in config.recipes if name not in RECIPES.names()]
    if unknown:
        raise ValueError(f"recipes: unknown {unknown}; known: {RECIPES.names()}")
    models = models or prepare_models(config)
    if models.arch != config.arch:
        raise ValueError(f"arch: the reused models in {models.model_root} have a {models.arch!r} base, "
                         f"not {config.arch!r}; drop --reuse-models or pass --arch {models.arch}")
    rows = []
    for name in config.recipes:
        spec = RECIPES.get(name)(models.threshold)
        row = _row(name, spec, run_pipeline(config, models, name, spec))
        row.labels = audit_variant(config, models.world, name)
        row.recall = filter_recall(models.world, variant_dir(config, name))
        rows.append(row)
    result = {"rows": rows, "threshold": models.threshold, "timings": dict(models.timings),
              "scorer_auc": scorer_auc(models.world, models.model_root / SCORER),
              "baselines": trivial_baselines(models.world.world), "wall_seconds": time.monotonic() - started}
    save_comparison(Path(config.workspace).resolve(), result)
    _log_comparison(config, result)
    return result


COMPARISON_FILE = "proxy_comparison.json"  # the rows and settings behind the table, in the workspace


def save_comparison(workspace: Path, result: dict[str, Any]) -> Path:
    """Write the result next to the runs, before anything formats it: the table can always be made again."""
    path = Path(workspace) / COMPARISON_FILE
    path.write_text(json.dumps({**result, "rows": [asdict(row) for row in result["rows"]]}, indent=2))
    return path


def load_comparison(workspace: Path) -> dict[str, Any]:
    """What ``run_proxy`` wrote to ``workspace``, rows as ``RecipeRow``: ``format_table`` takes it again."""
    data = json.loads((Path(workspace) / COMPARISON_FILE).read_text())
    return {**data, "rows": [RecipeRow(**row) for row in data["rows"]]}


def _log_comparison(config: ProxyConfig, result: dict[str, Any]) -> None:
    """One ``proxy-comparison`` run with every recipe's mean, best soup and the table."""
    with mlflow.start_run(run_name="proxy-comparison", experiment_id=mlflow.get_experiment_by_name(
            config.experiment).experiment_id):
        mlflow.log_params({"seeds": config.seeds, "recipes": ",".join(config.recipes),
                           "similarity_threshold": result["threshold"]})
        for recipe, by_metric in gains(result["rows"]).items():
            for metric, gain in by_metric.items():
                mlflow.log_metrics({f"{recipe}/gain_over_{BASELINE}/{metric}/{end}": value
                                    for end, value in (("mean", gain.mean), ("low", gain.low), ("high", gain.high))})
        for row in result["rows"]:
            for kind, (removed, total) in row.recall.items():
                mlflow.log_metric(f"{row.recipe}/filter_recall/{kind}", removed / total)
            for metric in METRICS:
                mlflow.log_metric(f"{row.recipe}/finetune_mean/{metric}", row.mean(metric))
                for method, scores in row.soups.items():
                    mlflow.log_metric(f"{row.recipe}/{method}/{metric}", scores[metric])
            mlflow.log_metric(f"{row.recipe}/kept", row.kept)
            if row.labels.get("samples"):
                mlflow.log_metric(f"{row.recipe}/truthful_share", row.labels["truthful"] / row.labels["samples"])
        mlflow.log_metrics({f"prepare/{k}_seconds": v for k, v in result["timings"].items()})
        mlflow.log_metrics({f"scorer_auc/{k}": v for k, v in result["scorer_auc"].items()})
        mlflow.log_metrics({f"baseline/{k}": v for k, v in result.get("baselines", {}).items()})
        mlflow.log_metric("wall_seconds", result["wall_seconds"])
        mlflow.log_text(format_table(result), "comparison.txt")
        mlflow.log_dict({"rows": [asdict(row) for row in result["rows"]]}, "comparison.json")


def format_table(result: dict[str, Any]) -> str:
    """Recipe | kept | truthful share | re-captions | TextVQA / MMBench-circular per seed, seed mean, per soup.

    ``kept`` is the variant's size; ``truthful`` and ``recap`` describe the
    samples that trained (after the seeded cap), from the answer-key audit.
    """
    auc = result.get("scorer_auc", {})
    lines = [f"scorer ROC AUC, truthful over corrupted seed captions: {auc.get('overall', float('nan')):.3f} ("
             + ", ".join(f"{kind} {value:.2f}" for kind, value in auc.items() if kind != "overall") + ")",
             f"similarity threshold (95 % of clean held-out pairs kept): {result['threshold']}",
             *baseline_lines(result.get("baselines", {})),
             f"{'recipe':<22}{'kept':>6}{'truthful':>10}{'recap':>7}  {'model':<14}{'TextVQA':>9}{'MMBench':>9}"]
    for row in result["rows"]:
        entries = [(label, scores) for label, scores in sorted(row.finetunes.items())]
        entries.append(("seed mean", {m: row.mean(m) for m in METRICS}))
        entries += [(method, scores) for method, scores in sorted(row.soups.items())]
        audit = row.labels
        truthful = f"{100 * audit['truthful'] / audit['samples']:.0f} %" if audit.get("samples") else "-"
        recap = str(audit.get("recaptioned", "-"))
        for i, (label, scores) in enumerate(entries):
            head = f"{row.recipe:<22}{row.kept:>6}{truthful:>10}{recap:>7}" if i == 0 else " " * 45
            lines.append(f"{head}  {label:<14}{scores['textvqa']:>9.2f}{scores['mmbench_circular']:>9.2f}")
    return "\n".join(lines + gain_lines(result["rows"]) + recall_lines(result["rows"]))


def baseline_lines(baselines: dict[str, float]) -> list[str]:
    """The floors a model must clear, on one line (none when the result has none)."""
    if not baselines:
        return []
    return ["trivial baselines (no image): " + ", ".join(f"{BASELINE_NAMES[k]} {v:.2f}" for k, v in baselines.items())]


def gain_lines(rows: list[RecipeRow]) -> list[str]:
    """Each recipe's gain over no filter: seed mean and paired bootstrap 95 % interval, per benchmark."""
    found = gains(rows)
    if not found:
        return []
    n = next(iter(next(iter(found.values())).values())).n
    lines = [f"gain over {BASELINE}, mean of {n} paired seeds [paired bootstrap 95 % interval]:"]
    for recipe, by_metric in found.items():
        lines.append(f"  {recipe:<22}TextVQA {by_metric['textvqa'].describe()}")
        lines.append(f"  {'':<22}MMBench {by_metric['mmbench_circular'].describe()}")
    return lines


def _share(counts: list[int]) -> str:
    removed, total = counts
    return f"{100 * removed / total:.0f} % ({removed} of {total})"


def recall_lines(rows: list[RecipeRow]) -> list[str]:
    """The filters' recall per corruption kind, and on its own line the kind the scorer never saw."""
    lines = []
    for row in rows:
        if row.recall:
            lines.append(f"filter recall, {row.recipe}: " + ", ".join(
                f"{kind} {_share(counts)}" for kind, counts in row.recall.items()))
    unseen = [f"{row.recipe} {_share(row.recall[UNSEEN_CORRUPTION])}" for row in rows if UNSEEN_CORRUPTION in row.recall]
    if unseen:
        lines.append(f"filter recall on {UNSEEN_CORRUPTION} (never a negative in scorer training): " + ", ".join(unseen))
    return lines
