"""The pipeline run's closing record, on its MLflow parent run: a name that says the recipes, and the comparison.

Why a step and not the local driver: the last step (promote) runs wherever the
pipeline runs; on a cluster KFP's backend owns the parent run, and only a step
can write to it. The parent then reads, in the MLflow UI, as
``quickstart-filter+quickstart-recaption · quickstart`` and holds
``comparison/compare.txt`` and ``comparison/compare.png``: every model of the
experiment so far with the data that made it (``bettersynth compare``). The
experiment's saved view opens the parent expanded, beside its models' scores.

Example::

    finish_pipeline_run(pipeline_run_id())
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow import MlflowClient

from bettersynth.reports.compare import collect_rows, format_table, sort_rows, write_chart
from bettersynth.tracking.runs import KFP_RUN_TAG, data_step_runs, rename_run, run_title
from bettersynth.tracking.ui import save_runs_view

COMPARISON_DIR = "comparison"  # artifact folder of the parent run


def pipeline_title(name: str, recipes: list[str]) -> str:
    """The parent run's name with its recipe chain (unchanged when it already names it)."""
    chain = "+".join(recipes)
    return name if not chain or chain in name else run_title(chain, name)


def finish_pipeline_run(pipeline_run: str, client: MlflowClient | None = None) -> list[str]:
    """Rename the parent after its recipes, open it in the experiment's saved view (``save_runs_view``)
    and attach the experiment's comparison; returns the artifact paths."""
    if not pipeline_run:
        return []
    client = client or MlflowClient()
    parent = client.get_run(pipeline_run)
    recipes = [run.data.params.get("recipe.name", "?") for run in data_step_runs(pipeline_run, client)]
    title = pipeline_title(parent.info.run_name or "", recipes)
    if title != parent.info.run_name:
        rename_run(pipeline_run, title)
    save_runs_view(parent.info.experiment_id, expand=[pipeline_run], client=client)
    if KFP_RUN_TAG in parent.data.tags and parent.info.status == "RUNNING":
        client.set_terminated(pipeline_run)  # a step opened it (no KFP MLflow plugin): the last step closes it
    experiment = client.get_experiment(parent.info.experiment_id).name
    rows = sort_rows(collect_rows([experiment], client))
    if not rows:
        return []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "compare.txt").write_text(format_table(rows) + "\n", encoding="utf-8")
        write_chart(rows, folder / "compare.png", "score")
        client.log_artifacts(pipeline_run, str(folder), artifact_path=COMPARISON_DIR)
    return [f"{COMPARISON_DIR}/compare.txt", f"{COMPARISON_DIR}/compare.png"]
