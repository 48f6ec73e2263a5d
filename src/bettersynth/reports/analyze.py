"""Stats of a recipe's filters over a dataset, without filtering (the ``dj-analyze`` equivalent).

Why: thresholds should come from the data's own distribution, not from a
guess. Every filter scores every sample (through the score cache, so a later
``run_recipe`` with the chosen thresholds recomputes nothing); the output is a
percentile table, one histogram per stat and, on request, a recipe whose
bounds are mean ∓ kσ.

Output folder::

    stats.csv, stats.md     count, failed, mean, std, min, p1 ... p99, max per stat
    stats.jsonl             id and stats of every sample
    hist_<stat>.png         one histogram per stat
    auto_recipe.yaml        with k_sigma: the recipe with min/max = mean ∓ kσ

Example::

    result = analyze_recipe(Recipe.load("r.yaml"), Path("in.jsonl"), Path("/data/seed"), Path("analysis"),
                            model_root=Path("/models"), k_sigma=2.0)
    result.rows[0]["p50"]
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bettersynth.data.jsonl import BadLine, read_jsonl, write_jsonl
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.inference import auto_workers
from bettersynth.engine.score_cache import ScoreCache, default_cache_dir
from bettersynth.ops.base import Filter, OpContext
from bettersynth.recipes.recipe import Recipe

log = logging.getLogger(__name__)

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
COLUMNS = ["stat", "op", "count", "failed", "mean", "std", "min", *(f"p{p}" for p in PERCENTILES), "max"]


@dataclass
class Analysis:
    rows: list[dict[str, Any]]  # one per stat, keys = COLUMNS
    out_dir: Path
    auto_recipe: Path | None = None
    histograms: list[Path] = field(default_factory=list)


def analyze_recipe(
    recipe: Recipe,
    input_jsonl: Path,
    dataset_root: Path,
    out_dir: Path,
    model_root: Path | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    cache_dir: Path | None = None,
    k_sigma: float | None = None,
) -> Analysis:
    """Score every sample with every filter of ``recipe``; mappers are skipped (nothing is changed)."""
    if k_sigma is not None and not k_sigma > 0:
        raise ValueError(f"k_sigma: must be > 0, got {k_sigma}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(EngineSettings(batch_size=batch_size, num_workers=auto_workers() if num_workers is None else num_workers), dataset_root=Path(dataset_root))
    cache = ScoreCache(Path(cache_dir) if cache_dir else default_cache_dir()) if recipe.extra.get("use_cache", True) else None
    ops = recipe.build_ops(OpContext(engine=engine, model_root=Path(model_root) if model_root else None, score_cache=cache))
    samples = [item for item in read_jsonl(input_jsonl) if not isinstance(item, BadLine)]
    rows, values_by_label, labels = [], {}, []
    for op in ops:
        if not isinstance(op, Filter):
            log.info("analyze: %s is not a filter; skipped", op.name)
            labels.append(None)
            continue
        if not getattr(op, "analyzable", True):
            log.info("analyze: %s has no numeric stat (a hash); skipped", op.name)
            labels.append(None)
            continue
        label = _unique(op.stat_key, values_by_label)
        labels.append(label)
        stats = op.scores(samples)
        collected: dict[str, list[float]] = {}
        failed = 0
        for sample, stat in zip(samples, stats):
            if isinstance(stat, Failure):
                failed += 1
                continue
            # a dict stat holds several named stats (e.g. image_width and image_height)
            named = {(label if key == op.stat_key else key): value for key, value in stat.items()} if isinstance(stat, dict) else {label: stat}
            for key, value in named.items():
                sample.stats[key] = value
                values = value if isinstance(value, list) else [value]
                collected.setdefault(key, []).extend(v for v in values if v is not None and not _nan(v))
        for key, values in (collected or {label: []}).items():
            values_by_label[key] = np.asarray(values, dtype=float)
            rows.append(_summary(key, op.name, values_by_label[key], failed))
    write_jsonl(out_dir / "stats.jsonl", ({"id": s.id, "stats": s.stats} for s in samples))
    _write_tables(rows, out_dir)
    result = Analysis(rows, out_dir, histograms=[_histogram(label, values, out_dir) for label, values in values_by_label.items()])
    if k_sigma is not None:
        result.auto_recipe = _auto_recipe(recipe, ops, labels, values_by_label, k_sigma, out_dir / "auto_recipe.yaml")
    _log_mlflow(result)
    return result


def _unique(label: str, taken: dict) -> str:
    n, candidate = 1, label
    while candidate in taken:
        n += 1
        candidate = f"{label}_{n}"
    return candidate


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _summary(label: str, op_name: str, values: np.ndarray, failed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"stat": label, "op": op_name, "count": int(values.size), "failed": failed}
    if values.size == 0:
        return row | {c: None for c in COLUMNS[4:]}
    row |= {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()), "max": float(values.max())}
    row |= {f"p{p}": float(q) for p, q in zip(PERCENTILES, np.percentile(values, PERCENTILES))}
    return row


def _write_tables(rows: list[dict[str, Any]], out_dir: Path) -> None:
    with open(out_dir / "stats.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |")
    (out_dir / "stats.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _histogram(label: str, values: np.ndarray, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if values.size:
        ax.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))))
    ax.set(title=f"{label} (n={values.size})", xlabel=label, ylabel="count")
    path = out_dir / f"hist_{label}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _auto_recipe(recipe: Recipe, ops, labels, values_by_label, k: float, path: Path) -> Path:
    """The recipe with each filter's min/max set to mean ∓ kσ (integers rounded inwards)."""
    data = recipe.to_dict()
    for entry, op, label in zip(data["process"], ops, labels):
        values = values_by_label.get(label) if label else None
        if values is None or values.size == 0:
            continue
        (params,) = entry.values()
        low, high = values.mean() - k * values.std(), values.mean() + k * values.std()
        for name, bound in ((op.min_field, low), (op.max_field, high)):
            if name not in params:  # an op with several stats (e.g. shape): left as written
                continue
            current = params.get(name)
            if isinstance(current, int) and not isinstance(current, bool):
                params[name] = math.ceil(bound) if name == op.min_field else math.floor(bound)
            else:
                params[name] = float(bound)
    data["name"] = f"{recipe.name or 'recipe'}-auto-{k:g}sigma"
    Recipe.from_dict(data, source=str(path))  # the written recipe must load
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _log_mlflow(result: Analysis) -> None:
    """Into the active MLflow run, if any (the CLI and steps open one; tests need not)."""
    import mlflow

    if mlflow.active_run() is None:
        return
    for path in [result.out_dir / "stats.csv", result.out_dir / "stats.md", *result.histograms, result.auto_recipe]:
        if path is not None:
            mlflow.log_artifact(str(path), artifact_path="analysis")
    metrics = {f"{row['stat']}.{c}": row[c] for row in result.rows for c in ("mean", "std", "p5", "p50", "p95") if row.get(c) is not None}
    if metrics:
        mlflow.log_metrics(metrics)
    log.info("analysis logged to MLflow run %s", mlflow.active_run().info.run_id)
