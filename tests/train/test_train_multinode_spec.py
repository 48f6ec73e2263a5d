"""The job a multi-node train step generates: N x G torchrun, GPUs, the shared PVC, MLflow env, the profile's pool."""

import shlex
from pathlib import Path

import mlflow
import pytest
import yaml

from bettersynth.platform.placement import PRIORITY_LABEL
from bettersynth.platform.trainjob import torchrun_command
from bettersynth.steps.train import runner_for
from bettersynth.steps.train_plan import StageCall, TrainPlan
from bettersynth.steps.train_remote import RemoteRunner, mlflow_env

PROFILE = Path(__file__).parents[2] / "k8s" / "profiles" / "gke.yaml"
RECORDS = [{"id": "1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>"},
                                                         {"from": "gpt", "value": "a red bus"}]}]


def _plan(tmp_path: Path, **multinode) -> Path:
    (tmp_path / "shared").mkdir(exist_ok=True)
    section = {"kind": "trainjob", "num_nodes": 2, "gpus_per_node": 4, "shared_pvc": "bettersynth-shared",
               "shared_mount": str(tmp_path / "shared"), "profile": str(PROFILE), "cpu": "32", "memory": "256Gi",
               "env": {"NCCL_DEBUG": "WARN"}} | multinode
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"align": {"per_device_batch_size": 8}, "finetune": {"per_device_batch_size": 4},
                                    "multinode": section}))
    return path


def _runner(plan_path: Path, label: str = "align-s0") -> RemoteRunner:
    return RemoteRunner(TrainPlan.load(plan_path), plan_path, label, "md5/ab.dir")


def _calls(tmp_path: Path, plan_path: Path, stages=("align",)) -> list[StageCall]:
    plan = TrainPlan.load(plan_path)
    return [StageCall(s, tmp_path / "base", RECORDS, tmp_path / "data", plan.stage(s, 0), tmp_path / s / "model",
                      tmp_path / s / "ckpt") for s in stages]


def _patched_pod(manifest: dict) -> dict:
    [patch] = manifest["spec"]["runtimePatches"]
    return patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def _env(container_env: list[dict]) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_env}


def test_trainjob_for_two_nodes_of_four_gpus(tmp_path):
    plan_path = _plan(tmp_path)
    runner = _runner(plan_path)
    mlflow = {"MLFLOW_TRACKING_URI": "http://mlflow.ml:5000", "MLFLOW_EXPERIMENT_ID": "3", "MLFLOW_RUN_ID": "r1"}
    manifest = runner.manifest(_calls(tmp_path, plan_path), mlflow)
    name = manifest["metadata"]["name"]
    assert manifest["kind"] == "TrainJob" and name.startswith("bs-align-s0-") and len(name) <= 63
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["image"] == "us-docker.pkg.dev/PROJECT/bettersynth/bettersynth-gpu:0.1.0"  # the profile's gpu image
    spec_path = str(tmp_path / "shared" / "bettersynth" / "jobs" / name / "spec.json")
    assert trainer["command"] == ["torchrun", "--nnodes=2", "--nproc_per_node=4",
                                  "-m", "bettersynth.train.worker", spec_path]
    assert trainer["resourcesPerNode"] == {"requests": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"},
                                           "limits": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"}}
    env = _env(trainer["env"])
    assert {k: env[k] for k in mlflow} == mlflow  # the pods log into the step's own MLflow run
    assert env["BETTERSYNTH_WORLD_SIZE"] == "8" and env["BETTERSYNTH_GRADIENT_ACCUMULATION"] == "4"  # 256 / (8 x 8)
    assert env["NCCL_DEBUG"] == "WARN"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {
        "name": "bettersynth-mlflow-client", "key": "MLFLOW_TRACKING_PASSWORD", "optional": True}}

    [patch] = manifest["spec"]["runtimePatches"]  # Trainer >= 2.2: placement patches the runtime's `node` job
    assert patch["manager"] == "bettersynth.io/placement"
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    template = node["template"]["spec"]["template"]
    assert template["metadata"]["labels"] == {PRIORITY_LABEL: "bettersynth-training"}
    pod = template["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert sorted(claims.values()) == ["bettersynth-data", "bettersynth-models", "bettersynth-shared"]
    [container] = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert container["name"] == "node" and claims[mounts[str(tmp_path / "shared")]] == "bettersynth-shared"
    assert claims[mounts["/mnt/models"]] == "bettersynth-models" and mounts["/dev/shm"] == "dshm"
    assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest
    assert not any((tmp_path / "shared").iterdir())  # building the spec copies nothing


def test_pytorchjob_for_four_nodes_is_a_valid_pod_spec(tmp_path):
    plan_path = _plan(tmp_path, kind="pytorchjob", num_nodes=4, gpus_per_node=2, image="registry.example/bs:1")
    manifest = _runner(plan_path, "train-s1").manifest(_calls(tmp_path, plan_path, ("align", "finetune")))
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert manifest["kind"] == "PyTorchJob" and manifest["spec"]["nprocPerNode"] == "2"
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
    assert manifest["metadata"]["labels"]["bettersynth/stage"] == "finetune"  # the job's last stage
    pod = specs["Worker"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["command"]
    assert command[:3] == ["torchrun", "--nnodes=4", "--nproc_per_node=2"]
    # The Training Operator sets RANK and MASTER_ADDR/PORT, which torchrun does not read: passed explicitly.
    assert "--node_rank=$(RANK)" in command and "--master_addr=$(MASTER_ADDR)" in command
    assert container["image"] == "registry.example/bs:1"  # the plan's image wins over the profile's
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "32", "memory": "256Gi"}  # = requests
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {str(tmp_path / "shared"), "/mnt/data", "/dev/shm"}
    assert _env(container["env"])["BETTERSYNTH_WORLD_SIZE"] == "8"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"} and pod["tolerations"]
    assert specs["Master"]["template"]["metadata"]["labels"] == {PRIORITY_LABEL: "bettersynth-training"}
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    as_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker-0"}, "spec": pod}
    kubernetes_validate.validate(as_pod, "1.31.0", strict=True)


def test_a_world_size_that_cannot_meet_the_global_batch_is_refused_before_copying(tmp_path):
    plan_path = _plan(tmp_path, num_nodes=3, gpus_per_node=8)  # 24 x 8 per device does not divide 256
    runner = _runner(plan_path, "train-s0")
    with pytest.raises(ValueError, match="3 nodes x 8 GPUs cannot train stage 'align'.*256"):
        runner(_calls(tmp_path, plan_path, ("align", "finetune")))
    assert not any((tmp_path / "shared").iterdir())


def test_settings_errors_name_the_field(tmp_path, monkeypatch):
    monkeypatch.delenv("BETTERSYNTH_IMAGE", raising=False)
    plan_path = _plan(tmp_path, profile=None)
    with pytest.raises(ValueError, match="multinode.image: not set"):
        _runner(plan_path).manifest(_calls(tmp_path, plan_path))
    monkeypatch.setenv("BETTERSYNTH_IMAGE", "bettersynth:0.1.0")
    manifest = _runner(plan_path).manifest(_calls(tmp_path, plan_path))
    assert manifest["spec"]["trainer"]["image"] == "bettersynth:0.1.0"
    assert [v["persistentVolumeClaim"]["claimName"] for v in _patched_pod(manifest)["volumes"]] \
        == ["bettersynth-shared"]  # without a profile: only the shared PVC, no placement
    missing = _plan(tmp_path, shared_mount=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="multinode.shared_mount: .*nowhere is not mounted in this pod"):
        _runner(missing)(_calls(tmp_path, missing))
    with pytest.raises(ValueError, match="multinode"):
        TrainPlan.load(_plan(tmp_path, kind="mpijob"))
    with pytest.raises(ValueError, match="kind 'MPIJob'"):
        torchrun_command("MPIJob", 1, 1, [])


def test_the_pods_can_take_another_pool_than_the_waiting_step(tmp_path):
    plan_path = _plan(tmp_path, pool="gpu-spot")  # e.g. the step waits on cpu while the job holds the GPUs
    pod = _patched_pod(_runner(plan_path).manifest(_calls(tmp_path, plan_path)))
    assert pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true" and len(pod["tolerations"]) == 2
    with pytest.raises(ValueError, match=r"multinode.pool: unknown pool 'h100' \(pools: \['cpu', 'gpu', 'gpu-spot'\]"):
        _runner(_plan(tmp_path, pool="h100"))


def test_single_node_plans_train_in_the_step(tmp_path):
    assert TrainPlan.load(_plan(tmp_path, num_nodes=1, gpus_per_node=1)).runs_remote is False
    assert TrainPlan().runs_remote is False
    assert TrainPlan.load(_plan(tmp_path)).runs_remote is True
    local = runner_for(TrainPlan.load(_plan(tmp_path, num_nodes=1, gpus_per_node=1)), tmp_path / "train.yaml", "x", "h")
    assert not isinstance(local, RemoteRunner)


def test_job_names_are_stable_per_inputs(tmp_path):
    plan_path = _plan(tmp_path)
    calls = _calls(tmp_path, plan_path)
    name = _runner(plan_path).job_name(calls)
    assert name == _runner(plan_path).job_name(calls)  # a retried step adopts its job
    assert name != _runner(plan_path, "align-s1").job_name(calls)
    assert name != RemoteRunner(TrainPlan.load(plan_path), plan_path, "align-s0", "md5/cd.dir").job_name(calls)


def test_pods_get_the_mlflow_run_only_when_they_can_reach_its_store(mlflow_store, monkeypatch):
    with mlflow.start_run() as run:
        assert mlflow_env() == {}  # sqlite on the step's disk: the step logs the pods' metrics afterwards
        monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://mlflow.ml:5000")
        assert mlflow_env() == {"MLFLOW_TRACKING_URI": "http://mlflow.ml:5000",
                                "MLFLOW_EXPERIMENT_ID": run.info.experiment_id, "MLFLOW_RUN_ID": run.info.run_id}


def test_torchrun_command_is_a_plain_argv():
    command = torchrun_command("TrainJob", 4, 8, ["-m", "bettersynth.train.worker", "/mnt/shared/x/spec.json"])
    assert shlex.join(command) == ("torchrun --nnodes=4 --nproc_per_node=8 -m bettersynth.train.worker "
                                   "/mnt/shared/x/spec.json")


def test_shipped_multinode_example_meets_both_global_batches(tmp_path):
    example = Path(__file__).parents[2] / "configs" / "train" / "mgm2b_4x8.example.yaml"
    settings = yaml.safe_load(example.read_text())
    settings["multinode"] |= {"shared_mount": str(tmp_path / "shared"), "profile": str(PROFILE)}
    (tmp_path / "shared").mkdir()
    plan_path = tmp_path / "train.yaml"
    plan_path.write_text(yaml.safe_dump(settings))
    manifest = _runner(plan_path, "train-s0").manifest(_calls(tmp_path, plan_path, ("align", "finetune")))
    assert manifest["kind"] == "TrainJob" and manifest["spec"]["trainer"]["numNodes"] == 4
