"""MLflow runs for pipeline steps: one parent run per pipeline run, one nested run per step.

Why: inside KFP 2.17's MLflow integration the backend creates the runs and
injects ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_ID``
into each task pod; a component must log into *that* run. Locally, the driver
creates the parent run and hands its id down through ``PARENT_RUN_ENV``.

Example::

    with step_run("filter", params={"recipe.hash": h}) as run:
        mlflow.log_metric("kept", 120)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import mlflow

PARENT_RUN_ENV = "BETTERSYNTH_PARENT_RUN_ID"
STEP_TAG = "bettersynth.step"


def local_tracking_uri(workspace: Path) -> str:
    """The quickstart's store: sqlite ``mlflow.db`` in the workspace."""
    return f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


def ensure_experiment(name: str, artifact_root: Path | None = None) -> str:
    """The id of experiment ``name``, created with artifacts under ``artifact_root`` if new."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def step_run(step: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run this step logs into (KFP-injected, nested locally, or standalone)."""
    injected = os.environ.get("MLFLOW_RUN_ID")
    parent = os.environ.get(PARENT_RUN_ENV)
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    all_tags = {STEP_TAG: step, **(tags or {})}
    if injected:
        context = mlflow.start_run(run_id=injected)
    else:
        context = mlflow.start_run(
            run_name=step, experiment_id=experiment_id, tags=all_tags, parent_run_id=parent or None
        )
    with context as run:
        if injected:
            mlflow.set_tags(all_tags)
        if params:
            mlflow.log_params({k: _param_value(v) for k, v in params.items()})
        yield run


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]  # MLflow's limit on a param value


def log_dict_artifact(data: dict[str, Any], name: str) -> None:
    mlflow.log_dict(data, name)
