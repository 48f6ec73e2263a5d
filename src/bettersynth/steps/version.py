"""The dataset-versioning step: put a variant under DVC and record its hash in MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow

from bettersynth.recipes.step_files import STEP_RECORD
from bettersynth.tracking.runs import log_dataset_input, pipeline_run_id, step_run
from bettersynth.versioning.dvc import version_variant


def version_dataset(input_dir: Path, workspace: Path, name: str, lineage: dict) -> dict:
    """``dvc add`` + ``dvc push`` the variant; the pointer is logged so a pod-less checkout can start from it.

    The pipeline's parent run gets the variant as its dataset input (name = variant,
    digest = DVC hash): the MLflow UI's Dataset column of the pipeline run. The data
    step's ``step.json`` stays out of the variant: it names that step's MLflow run, so
    a rerun on the same data would otherwise get another hash.
    """
    parent = pipeline_run_id()
    params = {"variant": name, **{f"lineage.{k}": v for k, v in lineage.items()}}
    with step_run("version-dataset", params=params, title=[f"dataset {name}"]):
        version = version_variant(Path(workspace), Path(input_dir), name, lineage, leave_out=(STEP_RECORD,))
        mlflow.set_tags({"dataset.hash": version.dataset_hash, "dataset.variant": name, "dvc.remote": version.remote_url})
        mlflow.log_artifact(str(version.pointer), artifact_path="dvc")
        run_id = mlflow.active_run().info.run_id
        if parent and parent != run_id:
            log_dataset_input(version.dataset_hash, version.remote_url, name, path=f"data/variants/{name}",
                              n_samples=int(lineage["kept"]) if "kept" in lineage else None, run_id=parent)
    return {
        "dataset_hash": version.dataset_hash,
        "variant": name,
        "pointer": str(version.pointer),
        "remote_url": version.remote_url,
        "mlflow_run_id": run_id,
    }
