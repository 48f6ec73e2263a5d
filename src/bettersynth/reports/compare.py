"""Compare models across pipeline runs: which data (recipe, kept samples, DVC hash) made which scores.

Why: users run forty pipelines on many machines; the question is never one
run but "which recipe wins, and on how much data". Everything here is read
back from MLflow by the names the steps log, so the same comparison works in
the MLflow UI (columns ``params.recipe.hash``, ``tags.dataset.hash``,
``metrics.textvqa_accuracy``, ``metrics.mmbench_circular``).

Example::

    rows = collect_rows(["bettersynth-quickstart"])
    print(format_table(sort_rows(rows, "textvqa")))
    write_chart(rows, Path("compare.png"), metric="textvqa")
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from mlflow import MlflowClient

from bettersynth.tracking.runs import STEP_TAG

SortKey = Literal["textvqa", "mmbench_circular", "score", "kept"]
SORT_KEYS: tuple[str, ...] = ("textvqa", "mmbench_circular", "score", "kept")
DATA_STEPS = ("filter", "caption")


@dataclass
class ComparisonRow:
    """One model (a finetune seed or a soup) and the data behind it."""

    pipeline_run: str  # the MLflow parent run (one pipeline run)
    recipe_name: str  # data steps' recipe names, in order, joined by "+"
    recipe_hash: str  # their recipe hashes (12 hex each), joined by "+"
    kept: int | None  # samples in the variant the models trained on
    dataset_hash: str  # DVC hash of that variant
    model: str  # seed<k> or soup-<method>
    soup_method: str  # "" for single finetunes
    textvqa: float | None  # TextVQA accuracy, percent
    mmbench_circular: float | None  # MMBench CircularEval accuracy, percent
    model_version: str  # "<registered name> v<n>[ (aliases)]", "" if unregistered
    run_id: str  # the train or soup run

    @property
    def score(self) -> float | None:
        """The registry's ranking score: mean of TextVQA and MMBench circular."""
        if self.textvqa is None or self.mmbench_circular is None:
            return None
        return (self.textvqa + self.mmbench_circular) / 2


def _experiment_ids(client: MlflowClient, names: Sequence[str] | None) -> list[str]:
    if not names:
        return [e.experiment_id for e in client.search_experiments()]
    ids = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = ", ".join(e.name for e in client.search_experiments())
            raise ValueError(f"experiment {name!r} not found in the tracking store (known: {known})")
        ids.append(experiment.experiment_id)
    return ids


def _all_runs(client: MlflowClient, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _versions_by_run(client: MlflowClient) -> dict[str, str]:
    """Model versions keyed by their source run, labelled with name, number and aliases."""
    labels: dict[str, str] = {}
    for model in client.search_registered_models():
        aliases = defaultdict(list)
        for alias, version in (model.aliases or {}).items():
            aliases[str(version)].append(alias)
        for version in client.search_model_versions(f"name='{model.name}'"):
            extra = f" ({', '.join(sorted(aliases[str(version.version)]))})" if aliases.get(str(version.version)) else ""
            labels[version.run_id] = f"{model.name} v{version.version}{extra}"
    return labels


def _metric(run, name: str) -> float | None:
    return run.data.metrics.get(name) if run is not None else None


def collect_rows(experiments: Sequence[str] | None = None, client: MlflowClient | None = None) -> list[ComparisonRow]:
    """One row per trained or souped model in ``experiments`` (all experiments when empty)."""
    client = client or MlflowClient()
    runs = _all_runs(client, _experiment_ids(client, experiments))
    by_pipeline: dict[str, list] = defaultdict(list)
    for run in runs:
        by_pipeline[run.data.tags.get("mlflow.parentRunId", run.info.run_id)].append(run)
    versions = _versions_by_run(client)
    rows = []
    for pipeline_run, children in by_pipeline.items():
        children.sort(key=lambda r: r.info.start_time)
        steps = {r.data.tags.get(STEP_TAG, ""): r for r in children}
        data = [r for r in children if r.data.tags.get(STEP_TAG) in DATA_STEPS]
        version_run = steps.get("version-dataset")
        kept = int(data[-1].data.metrics["kept"]) if data and "kept" in data[-1].data.metrics else None
        for run in children:
            step = run.data.tags.get(STEP_TAG, "")
            if not (step.startswith("train-") or step.startswith("soup-")):
                continue
            label = step.removeprefix("train-")
            scored = steps.get(f"evaluate-{label}")
            dataset_hash = run.data.tags.get("dataset.hash") or (version_run.data.tags.get("dataset.hash", "") if version_run else "")
            rows.append(ComparisonRow(
                pipeline_run=pipeline_run,
                recipe_name="+".join(r.data.params.get("recipe.name", "?") for r in data),
                recipe_hash="+".join(r.data.params.get("recipe.hash", "?")[:12] for r in data),
                kept=kept,
                dataset_hash=dataset_hash,
                model=label,
                soup_method=run.data.tags.get("soup.method", ""),
                textvqa=_metric(scored, "textvqa_accuracy"),
                mmbench_circular=_metric(scored, "mmbench_circular"),
                model_version=versions.get(run.info.run_id, ""),
                run_id=run.info.run_id,
            ))
    return rows


def sort_rows(rows: list[ComparisonRow], key: SortKey = "score") -> list[ComparisonRow]:
    """Best first by ``key``; rows without that value go last."""
    if key not in SORT_KEYS:
        raise ValueError(f"sort_by: {key!r} is not one of {', '.join(SORT_KEYS)}")
    present = [r for r in rows if getattr(r, key) is not None]
    missing = [r for r in rows if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=True) + missing


def _num(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """The comparison as fixed-width text, one model a line."""
    header = ("recipe", "recipe hash", "kept", "dataset hash", "model", "TextVQA", "MMB circ", "score", "soup", "model version")
    body = [
        (r.recipe_name, r.recipe_hash, _num(r.kept), r.dataset_hash, r.model, _num(r.textvqa), _num(r.mmbench_circular),
         _num(r.score), r.soup_method or "-", r.model_version or "-")
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def chart_points(rows: Sequence[ComparisonRow], metric: SortKey) -> dict[str, list[tuple[int, float]]]:
    """Per recipe (name and hash), the (kept samples, metric) points to plot."""
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        value = getattr(row, metric)
        if row.kept is not None and value is not None:
            points[f"{row.recipe_name} ({row.recipe_hash})"].append((row.kept, float(value)))
    return dict(points)


def write_chart(rows: Sequence[ComparisonRow], path: Path, metric: SortKey = "score") -> Path:
    """PNG of ``metric`` against kept-sample count, one marker series per recipe."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if metric == "kept":
        raise ValueError("metric: the chart plots a score against kept samples; pick textvqa, mmbench_circular or score")
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    markers = "osD^v<>ph*"
    for index, (recipe, points) in enumerate(sorted(chart_points(rows, metric).items())):
        kept, values = zip(*points)
        axes.scatter(kept, values, label=recipe, marker=markers[index % len(markers)], alpha=0.8)
    axes.set_xlabel("samples kept in the training variant")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs kept samples, per recipe")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
