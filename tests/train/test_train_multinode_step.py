"""The train steps with a multi-node plan, end to end against a loopback Kubernetes API.

The fake cluster plays the training operator: when the step creates the job,
it runs the command the manifest names (the worker entry point, in this
process at world size 1, or under a real ``torchrun`` in the slow test) and
reports the job's outcome; the step must then hold exactly what a local step
holds: the same curve, checkpoints, model and MLflow records.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from bettersynth.steps.train import CURVE_FILE, select_seeds, train_align, train_finetune
from bettersynth.train import worker
from bettersynth.train.launch import JobFailed
from tests.train.fake_k8s import clusters, condition

PLAN = {
    "align": {"global_batch_size": 8, "per_device_batch_size": 4, "max_length": 64, "learning_rate": 1e-2},
    "finetune": {"global_batch_size": 8, "per_device_batch_size": 4, "max_length": 96, "max_steps": 1},
    "seed_selection": {"decide_after_steps": 1, "margin": 0.5},
}
HASH = "md5/ab.dir"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"


@pytest.fixture
def cluster_with():
    yield from clusters()


def _plans(tmp_path: Path, **multinode) -> tuple[Path, Path]:
    """The same training settings twice: trained in the step, and as a 2-node job on the shared PVC."""
    (tmp_path / "shared").mkdir()
    local, remote = tmp_path / "local.yaml", tmp_path / "remote.yaml"
    local.write_text(yaml.safe_dump(PLAN))
    remote.write_text(yaml.safe_dump(PLAN | {"multinode": {
        "num_nodes": 2, "gpus_per_node": 1, "shared_pvc": "bettersynth-shared", "shared_mount": str(tmp_path / "shared"),
        "image": "registry.example/bettersynth:test", "namespace": "ml", "poll_s": 0.01, "timeout_s": 600} | multinode}))
    return local, remote


def _command(manifest: dict) -> list[str]:
    return manifest["spec"]["trainer"]["command"]


def run_in_process(cluster):
    """The operator: run the worker the manifest names (world size 1 here) with the pods' env; report how it ended."""

    def on_create(manifest: dict) -> None:
        command = _command(manifest)
        argv = command[command.index("bettersynth.train.worker") + 1:]
        pod_env = {e["name"]: e["value"] for e in manifest["spec"]["trainer"]["env"] if "value" in e}
        saved = {k: os.environ.get(k) for k in pod_env}
        os.environ.update(pod_env)
        try:
            worker.main(argv)
            cluster.set_status({"conditions": [condition("Complete")]})
        except Exception as exc:  # noqa: BLE001 - the pod's error becomes the job's reason, as the operator reports it
            cluster.set_status({"conditions": [condition("Failed", message=str(exc))]})
        finally:
            for key, value in saved.items():
                if value is None:
                    del os.environ[key]
                else:
                    os.environ[key] = value

    cluster.on_create = on_create
    return cluster


def _same_weights(a: Path, b: Path) -> bool:
    one, two = load_file(a), load_file(b)
    return one.keys() == two.keys() and all((one[k] == two[k]).all() for k in one)


def test_remote_align_and_finetune_match_the_local_steps(mlflow_store, small_world, pico_models, tmp_path,
                                                         cluster_with):
    dataset, base, instruct = small_world.seed_jsonl.parent, pico_models / "llava-base", small_world.instruct_json
    local_plan, remote_plan = _plans(tmp_path)
    cluster = run_in_process(cluster_with([{}]))

    remote = train_align(dataset, HASH, base, remote_plan, 0, tmp_path / "aligned-remote", api=cluster.api)
    local = train_align(dataset, HASH, base, local_plan, 0, tmp_path / "aligned-local")
    assert remote | {"mlflow_run_id": ""} == local | {"mlflow_run_id": ""}
    assert not remote["completed"] and remote["steps"] == 1  # paused at the decision step, as locally
    curves = [json.loads((tmp_path / f"aligned-{w}" / CURVE_FILE).read_text()) for w in ("remote", "local")]
    assert [r["loss"] for r in curves[0]["steps"]] == [r["loss"] for r in curves[1]["steps"]]
    [ckpt] = (tmp_path / "aligned-remote" / "checkpoints").iterdir()  # the decision checkpoint, copied back
    assert _same_weights(ckpt / "trainable.safetensors",
                         tmp_path / "aligned-local" / "checkpoints" / ckpt.name / "trainable.safetensors")

    [(_, path, manifest)] = [r for r in cluster.requests if r[0] == "POST"]
    assert path == TRAINJOBS and manifest["spec"]["trainer"]["numNodes"] == 2
    assert _command(manifest)[:3] == ["torchrun", "--nnodes=2", "--nproc_per_node=1"]
    assert cluster.methods()[-1] == "DELETE" and not cluster.jobs()  # a finished job is removed
    shared = tmp_path / "shared" / "bettersynth"
    assert not any((shared / "jobs").iterdir())  # and its folder
    assert {p.name.split("-", 1)[1] for p in (shared / "inputs").iterdir()} == {"seed", "llava-base"}  # staged inputs

    client = MlflowClient()
    run = client.get_run(remote["mlflow_run_id"])
    assert run.data.tags["multinode.job"] == f"TrainJob/{manifest['metadata']['name']}"
    assert run.data.params["multinode.num_nodes"] == "2"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "align/loss")] == \
        [m.value for m in client.get_metric_history(local["mlflow_run_id"], "align/loss")]

    # Stage 1 to the end and stage 2, as one job that starts from the remote decision checkpoint.
    selection = tmp_path / "selection"
    assert select_seeds([tmp_path / "aligned-remote"], remote_plan, selection) == [0]
    tuned = train_finetune(selection, 0, dataset, HASH, base, instruct, remote_plan, tmp_path / "model-remote",
                           api=cluster.api)
    local_selection = tmp_path / "selection-local"
    select_seeds([tmp_path / "aligned-local"], local_plan, local_selection)
    tuned_local = train_finetune(local_selection, 0, dataset, HASH, base, instruct, local_plan, tmp_path / "model-local")
    assert tuned["align_final_loss"] == tuned_local["align_final_loss"]
    assert tuned["finetune_final_loss"] == tuned_local["finetune_final_loss"]
    assert _same_weights(tmp_path / "model-remote" / "model.safetensors", tmp_path / "model-local" / "model.safetensors")
    assert (tmp_path / "model-remote" / "config.json").is_file()
    posts = [body for method, _, body in cluster.requests if method == "POST"]
    assert len(posts) == 2 and posts[1]["metadata"]["labels"]["bettersynth/stage"] == "finetune"

    run = client.get_run(tuned["mlflow_run_id"])
    for key in ("align/loss", "finetune/loss", "finetune/tokens_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == \
            len(client.get_metric_history(tuned_local["mlflow_run_id"], key)), key
    model = client.get_logged_model(tuned["mlflow_model_id"])
    assert model.tags["dataset.hash"] == HASH and model.tags["checkpoint.uri"] == (tmp_path / "model-remote").resolve().as_uri()
    assert run.data.tags["model.id"] == model.model_id


def test_pods_log_live_into_the_steps_run_and_nothing_twice(mlflow_store, small_world, pico_models, tmp_path,
                                                            cluster_with, monkeypatch):
    """With a tracking server the pods can reach, they log each step as it happens; the step adds no copies."""
    from bettersynth.steps import train_remote

    def reachable_store() -> dict:
        run = mlflow.active_run()
        return {"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_EXPERIMENT_ID": run.info.experiment_id,
                "MLFLOW_RUN_ID": run.info.run_id}

    monkeypatch.setattr(train_remote, "mlflow_env", reachable_store)
    _, remote_plan = _plans(tmp_path, keep_workdir=True, env={"BETTERSYNTH_TEST": "1"})
    cluster = run_in_process(cluster_with([{}]))
    result = train_align(small_world.seed_jsonl.parent, HASH, pico_models / "llava-base", remote_plan, 0,
                         tmp_path / "aligned", api=cluster.api)
    [workdir] = (tmp_path / "shared" / "bettersynth" / "jobs").iterdir()
    rows = [json.loads(line) for line in (workdir / "metrics-align.jsonl").read_text().splitlines()]
    assert [r["logged"] for r in rows] == [True]  # logged by the pod itself
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "align/loss")
    assert [(m.step, m.value) for m in history] == [(1, rows[0]["loss"])]
    assert "MLFLOW_RUN_ID" not in os.environ  # the pod's environment stayed in the pod
    assert cluster.jobs()  # keep_workdir keeps the job too


def test_a_failed_job_fails_the_step_with_its_reason(mlflow_store, small_world, pico_models, tmp_path, cluster_with):
    _, remote_plan = _plans(tmp_path)
    cluster = cluster_with([{}])
    cluster.on_create = lambda manifest: cluster.set_status(
        {"conditions": [condition("Running"), condition("Failed", message="node-1: OOMKilled")]})
    failed = pytest.raises(JobFailed, match="TrainJob ml/bs-align-s0-.* failed: FailedReason: node-1: OOMKilled")
    with mlflow.start_run() as parent, failed:
        train_align(small_world.seed_jsonl.parent, HASH, pico_models / "llava-base", remote_plan, 0,
                    tmp_path / "aligned", api=cluster.api)
    assert "DELETE" not in cluster.methods() and cluster.jobs()  # kept, for its pods' logs
    [workdir] = (tmp_path / "shared" / "bettersynth" / "jobs").iterdir()
    assert (workdir / "spec.json").is_file() and (workdir / "records-align.json").is_file()
    client = MlflowClient()
    [step] = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert step.info.status == "FAILED"


def test_a_crashing_worker_reports_its_error(mlflow_store, small_world, pico_models, tmp_path, cluster_with):
    """A real failure inside the pods (here: a base model that is not one) reaches the step as the job's reason."""
    _, remote_plan = _plans(tmp_path)
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    cluster = run_in_process(cluster_with([{}]))
    with pytest.raises(JobFailed, match="failed: FailedReason: .*not-a-model"):
        train_align(small_world.seed_jsonl.parent, HASH, broken, remote_plan, 0, tmp_path / "aligned", api=cluster.api)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_manifest_command_trains_under_real_torchrun(mlflow_store, small_world, pico_models, tmp_path,
                                                         cluster_with):
    """1 node x 2 processes (gloo on CPU): the pods' command, run as the Trainer would, with its PET_* variables."""
    local_plan, remote_plan = _plans(tmp_path, num_nodes=1, gpus_per_node=2, keep_workdir=True)
    cluster = cluster_with([{}])

    def on_create(manifest: dict) -> None:
        command = _command(manifest)
        assert command[0] == "torchrun"
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        env |= {e["name"]: e["value"] for e in manifest["spec"]["trainer"]["env"] if "value" in e}
        env |= {"PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(_free_port()),
                "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *command[1:]], check=False, env=env,
                              capture_output=True, text=True, timeout=600)
        status = "Complete" if proc.returncode == 0 else "Failed"
        cluster.set_status({"conditions": [condition(status, message=proc.stderr[-2000:])]})

    cluster.on_create = on_create
    dataset, base = small_world.seed_jsonl.parent, pico_models / "llava-base"
    remote = train_align(dataset, HASH, base, remote_plan, 0, tmp_path / "aligned-remote", api=cluster.api)
    local = train_align(dataset, HASH, base, local_plan, 0, tmp_path / "aligned-local")
    [workdir] = (tmp_path / "shared" / "bettersynth" / "jobs").iterdir()
    assert json.loads((workdir / "result-align.json").read_text())["world_size"] == 2
    assert remote["align_loss"] == pytest.approx(local["align_loss"], rel=1e-5)  # 2 x 4 per device = 1 x 4 x 2 steps
    assert (tmp_path / "aligned-remote" / "checkpoints").is_dir()
