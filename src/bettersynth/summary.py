"""What one pipeline run produced, read back from MLflow: the quickstart's closing table.

Why read it back instead of collecting return values: the table then shows
exactly what a user finds in MLflow later, and a step that forgot to log
shows up as a hole here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bettersynth.tracking import STEP_TAG


@dataclass
class RunSummary:
    parent_run_id: str
    experiment_id: str
    workspace: Path
    wall_seconds: float
    datasets: list[dict] = field(default_factory=list)  # one row per data step
    models: list[dict] = field(default_factory=list)  # one row per finetune or soup
    registry: list[dict] = field(default_factory=list)  # model versions of this run
    aliases: dict[str, str] = field(default_factory=dict)


def _children(client: MlflowClient, parent: str, experiment_id: str):
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time)


def collect_summary(parent_run_id: str, model_name: str, workspace: Path, wall_seconds: float) -> RunSummary:
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    summary = RunSummary(parent_run_id, parent.info.experiment_id, Path(workspace), wall_seconds)
    runs = _children(client, parent_run_id, parent.info.experiment_id)
    evals = {r.data.params.get("model"): r for r in runs if r.data.tags.get(STEP_TAG, "").startswith("evaluate")}
    dataset_hash = ""
    for run in runs:
        step, metrics, tags = run.data.tags.get(STEP_TAG, ""), run.data.metrics, run.data.tags
        if step in ("filter", "caption"):
            summary.datasets.append({
                "step": step, "recipe": run.data.params.get("recipe.name", ""),
                "in": int(metrics.get("n_in", 0)), "kept": int(metrics.get("kept", 0)),
                "filtered": int(metrics.get("filtered", 0)), "rejected": int(metrics.get("rejected", 0)),
                "added": int(metrics.get("added", 0)), "added_kept": int(metrics.get("added_kept", 0)),
                "run_id": run.info.run_id,
            })
        elif step == "version-dataset":
            dataset_hash = tags.get("dataset.hash", "")
            summary.datasets.append({"step": step, "variant": tags.get("dataset.variant", ""), "dataset_hash": dataset_hash, "run_id": run.info.run_id})
        elif step.startswith("train-") or step.startswith("soup-"):
            label = f"seed{run.data.params['seed']}" if step.startswith("train-") else step
            scored = evals.get(label)
            summary.models.append({
                "model": label, "dataset_hash": tags.get("dataset.hash", dataset_hash), "run_id": run.info.run_id,
                "textvqa": scored.data.metrics.get("textvqa_accuracy") if scored else None,
                "mmbench_circular": scored.data.metrics.get("mmbench_circular") if scored else None,
            })
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException:
        versions, aliases = [], {}
    summary.registry = [
        {"version": v.version, "run_id": v.run_id, "kind": v.tags.get("kind", ""), "score": v.tags.get("score", "")}
        for v in versions if v.tags.get("pipeline.run") == parent_run_id
    ]
    summary.aliases = dict(aliases)
    return summary


def format_summary(summary: RunSummary, model_name: str) -> str:
    """Plain-text tables plus the commands to look further."""
    lines = [f"bettersynth quickstart finished in {summary.wall_seconds:.0f} s (parent MLflow run {summary.parent_run_id})", ""]
    lines.append(f"{'data step':<16}{'in':>6}{'kept':>7}{'filtered':>10}{'rejected':>10}{'added':>7}  run / DVC hash")
    for row in summary.datasets:
        if row["step"] == "version-dataset":
            lines.append(f"{'version ' + row['variant']:<56}  {row['dataset_hash']}")
        else:
            lines.append(
                f"{row['step']:<16}{row['in']:>6}{row['kept']:>7}{row['filtered']:>10}{row['rejected']:>10}{row['added']:>7}  {row['run_id']}"
            )
    lines += ["", f"{'model':<16}{'TextVQA':>9}{'MMBench(circ)':>15}  {'dataset hash':<38}run id"]
    for row in summary.models:
        tvqa = "-" if row["textvqa"] is None else f"{row['textvqa']:.1f}"
        mmb = "-" if row["mmbench_circular"] is None else f"{row['mmbench_circular']:.1f}"
        lines.append(f"{row['model']:<16}{tvqa:>9}{mmb:>15}  {row['dataset_hash']:<38}{row['run_id']}")
    lines += ["", f"registered model {model_name!r}: versions " + ", ".join(
        f"v{r['version']} ({r['kind']}, score {float(r['score']):.1f})" for r in summary.registry
    )]
    lines.append("aliases: " + ", ".join(f"{alias} -> v{version}" for alias, version in sorted(summary.aliases.items())))
    hashes = sorted({row["dataset_hash"] for row in summary.datasets if row.get("dataset_hash")})
    lines += [
        "",
        "Look further:",
        f"  mlflow ui --backend-store-uri sqlite:///{summary.workspace / 'mlflow.db'}",
        f"  bettersynth compare --workspace {summary.workspace} --chart compare.png",
        *(f"  bettersynth data checkout {h} --workspace {summary.workspace}" for h in hashes),
    ]
    return "\n".join(lines)
