"""MLflow runs for pipeline steps: one parent run per pipeline run, one nested run per step.

Why: inside KFP 2.17's MLflow integration the backend creates the runs and
injects ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_ID``
into each task pod; a component must log into *that* run. Without the plugin
the cluster profile gives every step ``MLFLOW_TRACKING_URI`` and its KFP run
id (``KFP_RUN_ENV``), and the first step to log opens the parent run, tagged
with that id (``kfp_parent_run``). Locally, the driver creates the parent run
and hands its id down through ``PARENT_RUN_ENV``.

Example::

    with step_run("filter", params={"recipe.hash": h}) as run:
        mlflow.log_metric("kept", 120)

    with step_run("train-seed0"):
        log_dataset_input("3f2a...c1.dir", "s3://team-data/dvc", "quickstart")
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException

from bettersynth.tracking.attempts import attempt_tags, supersede_earlier_attempts
from bettersynth.tracking.outage import (  # noqa: F401  (re-exported: steps import them from here)
    STEP_HTTP_SETTINGS,
    bounded_http_retries,
    outage_policy,
    require_tracking_server,
)

PARENT_RUN_ENV = "BETTERSYNTH_PARENT_RUN_ID"
# On a cluster without KFP's MLflow plugin each step pod gets its KFP run's id (its `pipeline/runid`
# label, through the downward API: platform.placement); the steps find their parent run by this tag.
KFP_RUN_ENV = "BETTERSYNTH_KFP_RUN_ID"
KFP_RUN_TAG = "kfp.run_id"
STEP_TAG = "bettersynth.step"
# How long a new parent run must exist before a step trusts that no older one is still in flight
# (kfp_parent_run); above a create request's latency and the clock skew between nodes.
PARENT_SETTLE_S = 3.0
PARENT_SETTLE_ENV = "BETTERSYNTH_PARENT_SETTLE_S"
# What MLflow calls a training experiment (the UI's "Model training", not its GenAI traces view).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT = "custom_model_development"
# MLflow's mark of an evaluation run; the runs view opens the parent of one expanded.
RUN_TYPE_TAG = "mlflow.runType"
EVALUATION_RUN = "evaluation"
# Between the parts of a run name. A step's run is named by what tells it from its siblings
# ("seed 1", "soup greedy", "seed 1 · eval"): MLflow 3.17's runs table shows about 98 pixels
# (some 20 characters) of a nested run's name. The recipes name the parent run, once.
TITLE_SEPARATOR = " · "
def local_tracking_uri(workspace: Path) -> str:
    """The quickstart's store: sqlite ``mlflow.db`` in the workspace."""
    return f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


def cli_tracking_uri(workspace: Path, explicit: str | None = None) -> str:
    """The store a command reads: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
    else the quickstart's ``mlflow.db`` in ``workspace`` (created on first use)."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(workspace)


def ensure_experiment(name: str, artifact_root: Path | None = None) -> str:
    """The id of training experiment ``name``, created with artifacts under ``artifact_root`` if new.

    A tracking *server* keeps its own artifact store (``--artifacts-destination``):
    there ``artifact_root`` is ignored so artifacts travel through the server.
    An existing experiment without a kind is marked a training experiment too.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mark_training_experiment(experiment)
        return experiment.experiment_id
    served = mlflow.get_tracking_uri().startswith(("http://", "https://"))
    location = Path(artifact_root).resolve().as_uri() if artifact_root and not served else None
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT})
    except MlflowException as exc:  # another step created it a moment ago (parallel steps on a cluster)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(name).experiment_id


def mark_training_experiment(experiment: Any) -> None:
    """Tag ``experiment`` (an MLflow ``Experiment``) as training, unless it already says what it is.

    Why: without the tag MLflow treats an experiment as GenAI (traces, no runs table).
    """
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)


def run_title(*parts: str) -> str:
    """A run name from its non-empty parts: ``run_title("seed 1", "similarity")`` is ``seed 1 · similarity``."""
    return TITLE_SEPARATOR.join(part for part in parts if part)


def model_title(label: str) -> str:
    """How a run name says which model: ``seed0`` -> ``seed 0``, ``soup-greedy`` -> ``soup greedy``."""
    if label.startswith("seed") and label[4:].isdigit():
        return f"seed {label[4:]}"
    return label.replace("-", " ", 1) if label.startswith("soup-") else label


def rename_run(run_id: str, name: str) -> None:
    mlflow.MlflowClient().update_run(run_id, name=name)


def pipeline_run_id() -> str:
    """The id that groups one pipeline run's steps: the MLflow parent run ("" outside a pipeline).

    Locally the driver passes it down; under KFP's MLflow integration it is the
    parent of the injected task run; on a cluster without it, the run tagged
    with the step's KFP run id (``kfp_parent_run``).
    """
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    task_run = injected_run_id()
    if task_run:
        return mlflow.MlflowClient().get_run(task_run).data.tags.get("mlflow.parentRunId", task_run)
    if os.environ.get(KFP_RUN_ENV):
        return kfp_parent_run(os.environ[KFP_RUN_ENV])
    return ""


_KFP_PARENTS: dict[str, str] = {}  # KFP run id -> its parent run, once found in this process
# The run KFP's MLflow plugin injected into this pod, as the pod started: MLflow's end_run() unsets
# MLFLOW_RUN_ID, and a step that opens its run twice, or asks for its pipeline run afterwards, still has it.
_INJECTED_RUN = os.environ.get("MLFLOW_RUN_ID")


def injected_run_id() -> str | None:
    """The task run KFP's MLflow plugin made for this step, if any."""
    return os.environ.get("MLFLOW_RUN_ID") or _INJECTED_RUN


def kfp_parent_run(kfp_run: str, settle_s: float | None = None) -> str:
    """The MLflow parent run of KFP run ``kfp_run``: found by its tag, else opened by the first step that asks.

    Why a settle time: MLflow has no create-if-absent, and parallel steps
    (shards) may ask at once. The parent is the oldest tagged run by (start
    time, run id), an order every step agrees on once all creations have
    reached the server; so a step looks again when the oldest run it saw is
    ``settle_s`` old (longer than a request takes to land), and one that
    created a run that lost deletes it. The experiment is
    ``$MLFLOW_EXPERIMENT_ID``, else ``$MLFLOW_EXPERIMENT_NAME`` (the cluster profile's).
    """
    if kfp_run in _KFP_PARENTS:
        return _KFP_PARENTS[kfp_run]
    settle_s = float(os.environ.get(PARENT_SETTLE_ENV, PARENT_SETTLE_S)) if settle_s is None else settle_s
    client = mlflow.MlflowClient()
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or ensure_experiment(
        os.environ.get("MLFLOW_EXPERIMENT_NAME") or "bettersynth")
    query = f"tags.`{KFP_RUN_TAG}` = '{kfp_run}'"

    def oldest_first() -> list:
        found = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=50)
        return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))

    found = oldest_first()
    mine = None
    if not found:
        mine = client.create_run(experiment_id, run_name=f"kfp run {kfp_run[:8]}", tags={KFP_RUN_TAG: kfp_run})
        found = [mine]
    young_for = found[0].info.start_time / 1000 + settle_s - time.time()
    if young_for > 0:
        time.sleep(young_for)
        found = oldest_first()
    parent = found[0].info.run_id
    if mine is not None and mine.info.run_id != parent:
        client.delete_run(mine.info.run_id)
    _KFP_PARENTS[kfp_run] = parent
    return parent


def data_step_runs(pipeline_run: str, client: Any = None) -> list:
    """The data steps (runs with a ``recipe.hash`` tag) of pipeline run ``pipeline_run``, in step order."""
    if not pipeline_run:
        return []
    client = client or mlflow.MlflowClient()
    parent = client.get_run(pipeline_run)
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{pipeline_run}' and tags.`recipe.hash` != ''",
        order_by=["attributes.start_time ASC"],
    )


@contextlib.contextmanager
def step_run(step: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
             title: Sequence[str] = (), recipe: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run this step logs into (KFP-injected, nested locally, or standalone).

    ``step`` goes into the ``bettersynth.step`` tag (what code reads). The run's name, what a
    person reads in the MLflow UI, is ``step_title(step, title, recipe)``. An unreachable
    tracking server fails the step here, before any work, with its URL; one that goes away
    later fails it with ``ServiceUnavailable`` after the bounded retries (``tracking.outage``).
    """
    with outage_policy():
        require_tracking_server()
        with _open_run(step, params, tags, step_title(step, title, recipe)) as run:
            yield run


def step_title(step: str, title: Sequence[str] = (), recipe: str | None = None) -> str:
    """A step's run name: inside a pipeline run ``title`` then ``recipe`` if given (a data step's),
    e.g. ``seed 1`` or ``filter · similarity``; outside one, or without ``title``, ``step``."""
    if not title or not pipeline_run_id():
        return step
    return run_title(*title, recipe or "")


@contextlib.contextmanager
def _open_run(step: str, params: dict[str, Any] | None, tags: dict[str, str] | None, name: str) -> Iterator[mlflow.ActiveRun]:
    injected = injected_run_id()
    parent = None if injected else pipeline_run_id()
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if parent and not experiment_id:  # a step's run sits in its parent's experiment
        experiment_id = mlflow.MlflowClient().get_run(parent).info.experiment_id
    all_tags = {STEP_TAG: step, **(tags or {})}
    if injected:
        context = mlflow.start_run(run_id=injected)
    else:
        active = mlflow.active_run()  # a step called inside a run (a notebook, a test) nests under it
        context = mlflow.start_run(
            run_name=name, experiment_id=experiment_id or (active.info.experiment_id if active else None),
            tags=all_tags | (attempt_tags() if parent else {}), parent_run_id=parent or None, nested=active is not None,
        )
    with context as run:
        if injected:
            # KFP's backend made this run and its experiment: name the one, mark the other as training
            mlflow.set_tags(all_tags)
            rename_run(run.info.run_id, name)
            mark_training_experiment(mlflow.get_experiment(run.info.experiment_id))
        elif parent:  # a rerun of an interrupted pipeline run: this step's run replaces the earlier attempt's
            supersede_earlier_attempts(run, {STEP_TAG: step})
        if params:
            mlflow.log_params({k: _param_value(v) for k, v in params.items()})
        yield run


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]  # MLflow's limit on a param value


MAX_BATCH_METRICS = 1000  # MLflow's limit per log_batch call


def log_metric_history(rows: list[tuple[str, float, int]]) -> None:
    """Log (key, value, step) rows to the active run in batches.

    Why: a replayed curve (thousands of steps) logged one call per step took
    5 ms a call against a local store; batches of 1,000 take a sixteenth of that.
    """
    from mlflow.entities import Metric

    run_id = mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step) for key, value, step in rows]
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS])


def log_dict_artifact(data: dict[str, Any], name: str) -> None:
    mlflow.log_dict(data, name)


DVC_SOURCE_TYPE = "dvc"


class DVCDatasetSource(DatasetSource):
    """Where a dataset's bytes live: a DVC remote and the content hash that names them.

    Why not a path: the training machine's path means nothing elsewhere; the
    remote URL + hash restores the same bytes anywhere
    (``bettersynth data checkout <hash>``).
    """

    def __init__(self, remote_url: str, dataset_hash: str, path: str = "") -> None:
        self.remote_url = remote_url
        self.dataset_hash = dataset_hash
        self.path = path  # the variant's folder inside the DVC project, e.g. data/variants/quickstart

    @staticmethod
    def _get_source_type() -> str:
        return DVC_SOURCE_TYPE

    def load(self, **kwargs: Any) -> Any:
        raise NotImplementedError(f"restore {self.dataset_hash} with: bettersynth data checkout {self.dataset_hash}")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built explicitly, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> DVCDatasetSource:
        raise NotImplementedError("DVCDatasetSource is built explicitly")

    def to_dict(self) -> dict[str, Any]:
        return {"remote_url": self.remote_url, "dataset_hash": self.dataset_hash, "path": self.path}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DVCDatasetSource:
        return cls(source_dict["remote_url"], source_dict["dataset_hash"], source_dict.get("path", ""))


def _register_dvc_source() -> None:
    from mlflow.data.dataset_source_registry import (
        get_registered_sources,
        register_dataset_source,
    )

    if DVCDatasetSource not in get_registered_sources():
        register_dataset_source(DVCDatasetSource)


def log_dataset_input(
    dataset_hash: str,
    remote_url: str,
    name: str,
    path: str = "",
    context: str = "training",
    n_samples: int | None = None,
    run_id: str | None = None,
) -> None:
    """Log a dataset input sourced from DVC to ``run_id`` (default: the active run).

    The name is the variant's and the digest DVC's hash itself (``<md5>.dir`` is 36
    characters, MLflow's limit), so the MLflow UI's Dataset column and ``dvc`` name
    the same bytes the same way.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if not dataset_hash:
        raise ValueError("dataset_hash: empty; pass the DVC hash of the variant the run trained on")
    if len(dataset_hash) > 36:
        raise ValueError(f"dataset_hash: {dataset_hash!r} is longer than MLflow's 36-character digest")
    _register_dvc_source()
    dataset = MetaDataset(DVCDatasetSource(remote_url, dataset_hash, path), name=name, digest=dataset_hash)
    tags = {MLFLOW_DATASET_CONTEXT: context, "dvc.hash": dataset_hash}
    if n_samples is not None:
        tags["samples"] = str(n_samples)
    run_id = run_id or mlflow.active_run().info.run_id
    entry = DatasetInput(dataset._to_mlflow_entity(), [InputTag(k, v) for k, v in tags.items()])
    for attempt in range(3):
        try:
            mlflow.MlflowClient().log_inputs(run_id, datasets=[entry])
            return
        except MlflowException:
            # Seeds training in parallel log the same dataset at once; the store creates
            # it on first use, so the loser of that race finds it on the next try.
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def dvc_dataset_inputs(run: Any) -> list[dict[str, Any]]:
    """The DVC-sourced dataset inputs of an MLflow ``Run``: name, hash, remote URL, path."""
    rows = []
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        dataset = dataset_input.dataset
        if dataset.source_type != DVC_SOURCE_TYPE:
            continue
        source = json.loads(dataset.source)
        rows.append({"name": dataset.name, **source})
    return rows
