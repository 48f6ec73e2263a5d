"""Session fixtures: a real MLflow server (sqlite, and PostgreSQL when the machine has it) and one
small pipeline run through kfp.local against the sqlite one, shared by every tracking test."""

from __future__ import annotations

import os

import dvc.repo  # noqa: F401  DVC binds its log handlers to sys.stdout on first import: not to one test's capsys
import mlflow
import pytest
from tracking_servers import mlflow_server, postgres_missing, postgres_server

from bettersynth_demo.world import WorldConfig

PIPELINE_WORLD = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_mlflow_server(tmp_path_factory):
    reason = postgres_missing()
    if reason:
        pytest.skip(f"PostgreSQL backend not tested: {reason}")
    root = tmp_path_factory.mktemp("mlflow-postgres")
    with postgres_server() as database, mlflow_server(database, root) as url:
        yield url


@pytest.fixture
def tracking_to():
    """Point MLflow (this process and its children) at a server for one test, then restore."""
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")

    def point(url: str) -> None:
        mlflow.set_tracking_uri(url)
        os.environ["MLFLOW_TRACKING_URI"] = url

    yield point
    mlflow.set_tracking_uri(previous_uri)
    if previous_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous_env


@pytest.fixture(scope="session")
def pipeline_run(sqlite_server, tmp_path_factory):
    """The quickstart pipeline (one seed, one soup) logged to the sqlite server; (workspace, summary)."""
    import bettersynth_demo.quickstart as quickstart

    workspace = tmp_path_factory.mktemp("pipeline-workspace")
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    config = quickstart.QuickstartConfig(
        workspace=workspace, seeds=[0], world=PIPELINE_WORLD, soup_methods=("uniform",), tracking_uri=sqlite_server
    )
    summary = quickstart.run_quickstart(config)
    mlflow.set_tracking_uri(previous_uri)
    if previous_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous_env
    return workspace, summary
