"""What the MLflow UI shows before anyone picks a column: run descriptions and a saved runs view.

Why: MLflow 3.17's runs table shows Run Name, Created, Dataset, Duration, Source and Models until
a person picks columns, so scores stay hidden. A run's description (the ``mlflow.note.content``
tag) is shown on its page and in the table's Description column; a saved view (MLflow's "Views"
menu, stored as the experiment tag ``mlflow.sharedViewState.<key>``) picks that column and the
score metrics, sets the order and widths its columns open with, and opens each pipeline run
expanded. The printed link opens it by its key.

Example::

    describe_run(eval_run_id, "TextVQA 41.2 · MMBench 30.0")
    save_runs_view(experiment_id, expand=[pipeline_run])  # then open runs_page(...) + RUNS_VIEW_QUERY
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import mlflow

RUN_NOTE_TAG = "mlflow.note.content"  # what MLflow shows as a run's description
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's saved views, one experiment tag each
RUNS_VIEW_KEY = "bettersynth-models"
RUNS_VIEW_NAME = "models and scores"  # its name in the runs page's Views menu
RUNS_VIEW_QUERY = f"viewStateShareKey={RUNS_VIEW_KEY}"  # the runs page's URL parameter that opens it
SCORE_METRICS = ("textvqa_accuracy", "mmbench_circular")
# Columns besides Run Name, Created and Duration, which MLflow always shows (Models is left out: it
# would push Description out of a 1600-pixel window).
VIEW_COLUMNS = ("attributes.`Dataset`", "attributes.`Description`", *(f"metrics.`{name}`" for name in SCORE_METRICS))
# Pixel widths the view opens with. MLflow pins Run Name and Created on the left and gives Run Name
# 190 px and Description 300 px; with its assistant panel open, a 1600-pixel window shows the
# scrolling part of the table from 635 px to 1160 px, which cut the MMBench score off the
# description and the recipe chain off the parent's name. Description now leads the scrolling part.
VIEW_WIDTHS = {"attributes.`Run Name`": 340, "attributes.`Description`": 250}
VIEW_ORDER = ("attributes.`Run Name`", "attributes.`Description`", "attributes.`Dataset`",
              *(f"metrics.`{name}`" for name in SCORE_METRICS))
MAX_EXPANDED = 200  # pipeline runs the view opens expanded, newest kept: ~10,000 of a tag's 20,000 characters


def describe_run(run_id: str, text: str, client: Any = None) -> None:
    """Set run ``run_id``'s description (shown on its page and in the Description column)."""
    (client or mlflow.MlflowClient()).set_tag(run_id, RUN_NOTE_TAG, text)


def save_runs_view(experiment_id: str, expand: Sequence[str] = (), client: Any = None) -> str:
    """Write (or update) the experiment's ``models and scores`` view with ``expand`` opened; returns its key.

    Why expand: a shared view opens only the runs its state names expanded, where the default view
    opens the parents of evaluation runs. Runs expanded by earlier pipeline runs stay so.
    """
    client = client or mlflow.MlflowClient()
    tag = VIEW_TAG_PREFIX + RUNS_VIEW_KEY
    now = int(time.time() * 1000)
    saved = client.get_experiment(experiment_id).tags.get(tag)
    envelope = json.loads(saved) if saved else {"createdAt": now}
    expanded = dict(json.loads(envelope["state"]).get("runsExpanded", {})) if saved else {}
    expanded |= dict.fromkeys(expand, True)
    state = {"selectedColumns": list(VIEW_COLUMNS), "columnOrder": list(VIEW_ORDER), "columnWidths": dict(VIEW_WIDTHS),
             "runsExpanded": dict(list(expanded.items())[-MAX_EXPANDED:])}
    envelope = {"name": RUNS_VIEW_NAME, "createdAt": envelope["createdAt"], "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, tag, json.dumps(envelope))
    return RUNS_VIEW_KEY


SCORE_LABELS = {"textvqa_accuracy": "TextVQA", "mmbench_circular": "MMBench"}


def score_line(metrics: dict[str, float]) -> str:
    """The scores as a person reads them first: ``TextVQA 41.2 · MMBench 30.0`` (those present, 1 decimal)."""
    return " · ".join(f"{label} {metrics[key]:.1f}" for key, label in SCORE_LABELS.items() if key in metrics)
