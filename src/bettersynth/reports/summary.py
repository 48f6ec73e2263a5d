"""What one pipeline run produced, read back from MLflow: the quickstart's closing table.

Why read it back instead of collecting return values: the table then shows
exactly what a user finds in MLflow later, and a step that forgot to log
shows up as a hole here.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bettersynth.tracking.runs import STEP_TAG, local_tracking_uri
from bettersynth.tracking.ui import RUNS_VIEW_QUERY


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
    tracking_uri: str = ""  # where it was logged ("" or sqlite: the workspace's mlflow.db)


ROUND_COLUMNS = ("n_in", "n_out", "filtered", "rejected", "replaced", "removed", "created_kept")  # round/<name> metrics read back


def _rounds(client: MlflowClient, run) -> list[dict]:
    """Each round's counts of a multi-round data step (``round/<count>`` metrics, step = round index)."""
    if "round/n_in" not in run.data.metrics:
        return []
    history = {name: {m.step: int(m.value) for m in client.get_metric_history(run.info.run_id, f"round/{name}")}
               for name in ROUND_COLUMNS}
    names = json.loads(run.data.tags.get("recipe.rounds", "[]"))
    return [{"round": i, "name": names[i] if i < len(names) else f"round-{i}", "in": history["n_in"].get(i, 0),
             "kept": history["n_out"].get(i, 0), "filtered": history["filtered"].get(i, 0),
             "rejected": history["rejected"].get(i, 0), "replaced": history["replaced"].get(i, 0),
             "removed": history["removed"].get(i, 0), "added": history["created_kept"].get(i, 0)}
            for i in sorted(history["n_in"])]


def _children(client: MlflowClient, parent: str, experiment_id: str):
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time)


def collect_summary(parent_run_id: str, model_name: str, workspace: Path, wall_seconds: float) -> RunSummary:
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    summary = RunSummary(parent_run_id, parent.info.experiment_id, Path(workspace), wall_seconds,
                         tracking_uri=mlflow.get_tracking_uri())
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
                "replaced": int(metrics.get("replaced", 0)), "removed": int(metrics.get("removed", 0)),
                "run_id": run.info.run_id, "rounds": _rounds(client, run),
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


def _count_line(label: str, row: dict) -> str:
    return (f"{label[:29]:<30}{row['in']:>6}{row['kept']:>7}{row['filtered']:>10}{row['rejected']:>10}"
            f"{row.get('replaced', 0):>10}{row.get('removed', 0):>9}{row['added']:>7}")


MLFLOW_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves by default


def command_prefix(cwd: Path | None = None) -> str:
    """How a fresh shell in ``cwd`` calls this installation's commands: ``.venv/bin/`` from the
    repository root, an absolute folder from elsewhere, nothing when they are not beside Python."""
    folder = Path(sys.executable).parent  # not resolved: a venv's python is a link to the base one
    if not (folder / "bettersynth").is_file():
        return ""
    try:
        return f"{folder.relative_to(Path.cwd() if cwd is None else cwd)}/"
    except ValueError:
        return f"{folder}/"


def runs_page(base_url: str, experiment_id: str) -> str:
    """The experiment's training runs (MLflow 3 opens its GenAI pages unless the link asks) in the
    saved view that shows descriptions and scores (``bettersynth.tracking.ui.save_runs_view``)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&{RUNS_VIEW_QUERY}"


def look_further(summary: RunSummary, bin_prefix: str | None = None) -> list[str]:
    """The commands to look further at one pipeline run, as a fresh shell in the repository root runs them."""
    hashes = [row["dataset_hash"] for row in summary.datasets if row.get("dataset_hash")]
    return look_further_commands(summary.workspace, summary.tracking_uri, summary.experiment_id, hashes,
                                 bin_prefix=bin_prefix)


def look_further_commands(workspace: Path, tracking_uri: str | None, experiment_id: str, dataset_hashes: Iterable[str] = (),
                          experiment: str | None = None, bin_prefix: str | None = None) -> list[str]:
    """Open the runs page, compare the runs (of ``experiment`` when given), check out each variant by its hash."""
    bin_prefix = command_prefix() if bin_prefix is None else bin_prefix
    default = local_tracking_uri(workspace)
    uri = tracking_uri or default
    store = "" if uri == default else f" --tracking-uri {shlex.quote(uri)}"  # compare reads the workspace's by default
    if uri.startswith(("http://", "https://")):
        lines = [f"  open {runs_page(uri, experiment_id)}"]
    else:
        lines = [f"  {bin_prefix}mlflow ui --backend-store-uri {shlex.quote(uri)}",
                 f"    then open {runs_page(MLFLOW_UI, experiment_id)}"]
    quoted = shlex.quote(str(workspace))
    which = f" --experiment {shlex.quote(experiment)}" if experiment else ""
    lines.append(f"  {bin_prefix}bettersynth compare --workspace {quoted}{store}{which} --chart compare.png")
    lines += [f"  {bin_prefix}bettersynth data checkout {h} --workspace {quoted}" for h in sorted(set(dataset_hashes))]
    return lines


def format_summary(summary: RunSummary, model_name: str, bin_prefix: str | None = None) -> str:
    """Plain-text tables plus the commands to look further (``bin_prefix``: see ``command_prefix``)."""
    lines = [f"bettersynth quickstart finished in {summary.wall_seconds:.0f} s (parent MLflow run {summary.parent_run_id})", ""]
    lines.append(f"{'data step':<30}{'in':>6}{'kept':>7}{'filtered':>10}{'rejected':>10}{'replaced':>10}{'removed':>9}"
                 f"{'added':>7}  MLflow run")
    versions = []
    for row in summary.datasets:
        if row["step"] == "version-dataset":
            versions.append(f"dataset variant {row['variant']}: DVC hash {row['dataset_hash']} (MLflow run {row['run_id']})")
            continue
        lines.append(_count_line(row["step"], {**row, "added": row.get("added_kept", row["added"])}) + f"  {row['run_id']}")
        lines += [_count_line(f"  round {r['round']} {r['name']}", r) for r in row.get("rounds", [])]
    lines.append("(kept = in - filtered - rejected + added; filtered + rejected = replaced + removed;"
                 " added: samples a mapper made, written)")
    lines += versions
    lines += ["", f"{'model':<16}{'TextVQA':>9}{'MMBench(circ)':>15}  {'DVC hash':<38}MLflow run"]
    for row in summary.models:
        tvqa = "-" if row["textvqa"] is None else f"{row['textvqa']:.1f}"
        mmb = "-" if row["mmbench_circular"] is None else f"{row['mmbench_circular']:.1f}"
        lines.append(f"{row['model']:<16}{tvqa:>9}{mmb:>15}  {row['dataset_hash']:<38}{row['run_id']}")
    lines += ["", f"registered model {model_name!r}: versions " + ", ".join(
        f"v{r['version']} ({r['kind']}, score {float(r['score']):.1f})" for r in summary.registry
    )]
    lines.append("aliases: " + ", ".join(f"{alias} -> v{version}" for alias, version in sorted(summary.aliases.items())))
    lines += ["", "Look further:", *look_further(summary, bin_prefix)]
    return "\n".join(lines)
