"""Reruns of an interrupted pipeline run: the parent run resumed, each step's earlier attempt superseded.

Why: a tracking server that dies mid-pipeline leaves a parent run that never
ended and the step runs of the steps that had started. Rerunning the same
pipeline (same arguments, same workspace) must read as one pipeline run, not
two: the rerun reopens that parent (found by ``PIPELINE_KEY_TAG``), every step
run carries the attempt that made it (``ATTEMPT_TAG``, handed down through
``ATTEMPT_ENV`` as the parent's id is), and a step of the rerun deletes its
earlier attempt's run of the same step once its own is open. MLflow's delete
is a soft one: the superseded runs stay restorable (``mlflow runs restore``)
with their artifacts until ``mlflow gc``. A finished parent is never reopened.

Example::

    key = pipeline_key("quickstart", experiment_id, arguments)
    with parent_run(experiment_id, "quickstart", key) as parent:
        ...  # steps get PARENT_RUN_ENV = parent.info.run_id and ATTEMPT_ENV = new_attempt()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow.entities import Run

PIPELINE_KEY_TAG = "bettersynth.pipeline.key"  # on a parent run: what it ran (pipeline_key)
ATTEMPT_TAG = "bettersynth.attempt"  # on a step run: the launch of the pipeline that made it
ATTEMPT_ENV = "BETTERSYNTH_ATTEMPT_ID"


def pipeline_key(*parts: Any) -> str:
    """What identifies a pipeline run across reruns: a hash of its name, experiment and arguments."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_attempt() -> str:
    return uuid.uuid4().hex


def interrupted_parent(experiment_id: str, key: str, client: Any = None) -> Run | None:
    """The newest parent run of ``key`` that never finished (server gone, step failed, killed), if any."""
    client = client or mlflow.MlflowClient()
    found = client.search_runs([experiment_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                               order_by=["attributes.start_time DESC"], max_results=10)
    return next((run for run in found if run.info.status != "FINISHED"), None)


@contextlib.contextmanager
def parent_run(experiment_id: str, run_name: str, key: str) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` for a pipeline's parent run: the interrupted one of ``key`` resumed, else a new one."""
    earlier = interrupted_parent(experiment_id, key)
    if earlier is not None:
        context = mlflow.start_run(run_id=earlier.info.run_id)
    else:
        context = mlflow.start_run(run_name=run_name, experiment_id=experiment_id, tags={PIPELINE_KEY_TAG: key})
    with context as run:
        yield run


def supersede_earlier_attempts(run: Run, identity: dict[str, str], client: Any = None) -> list[str]:
    """Delete the live siblings of step run ``run`` that another attempt made of the same step; returns their ids.

    The same step is the same run name and ``identity`` tags (the step's tag):
    within one attempt the sibling shards of a step keep each other, since
    only runs of other attempts (or of none) go.
    """
    attempt, parent = run.data.tags.get(ATTEMPT_TAG), run.data.tags.get("mlflow.parentRunId")
    if not attempt or not parent:
        return []
    client = client or mlflow.MlflowClient()
    query = " and ".join([f"tags.mlflow.parentRunId = '{parent}'"] + [f"tags.`{k}` = '{v}'" for k, v in identity.items()])
    siblings = client.search_runs([run.info.experiment_id], query, max_results=1000)
    earlier = [s.info.run_id for s in siblings if s.info.run_id != run.info.run_id
               and s.info.run_name == run.info.run_name and s.data.tags.get(ATTEMPT_TAG) != attempt]
    for run_id in earlier:
        client.delete_run(run_id)
    return earlier


def attempt_tags() -> dict[str, str]:
    """The tag a step run gets inside a launched pipeline (``ATTEMPT_ENV`` set), else none."""
    attempt = os.environ.get(ATTEMPT_ENV)
    return {ATTEMPT_TAG: attempt} if attempt else {}
