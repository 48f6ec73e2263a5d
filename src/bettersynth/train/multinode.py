"""Multi-node training specs: a Kubeflow Trainer ``TrainJob`` or a Training Operator ``PyTorchJob``.

Why: past one node, a pipeline step cannot train in its own pod; it submits a
job that the cluster's training operator runs as N pods x G GPUs under
``torchrun``, then waits for it. The spec is derived from the same settings as
the single-node run (world size = N x G must divide the global batch exactly),
so a config that trains on one node scales without edits, and the generated
manifest is plain data that tests can read.

Example::

    job = MultiNodeJob(name="mgm-align-seed0", image="registry/bettersynth:0.1.0", num_nodes=2, gpus_per_node=8,
                       command=["python", "-m", "my_train_entry", "--plan", "/mnt/configs/train.yaml"])
    manifest = trainjob_manifest(job, defaults_for("align"))  # kubectl apply -f, or the Kubernetes API:
    submit_and_wait(manifest, timeout_s=24 * 3600)  # bettersynth.train.launch: create, poll, delete on cancel
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bettersynth.train.config import StageConfig

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
PYTORCHJOB_API = "kubeflow.org/v1"


class MultiNodeJob(BaseModel):
    """Where and how big a distributed stage runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # Kubernetes object name (DNS label: lower-case letters, digits, '-')
    namespace: str = "default"  # namespace the job is created in
    image: str  # training image (carries bettersynth and the gpu extra)
    command: list[str] = Field(min_length=1)  # what each process runs (torchrun sets RANK/WORLD_SIZE around it)
    num_nodes: int = Field(1, gt=0)  # pods, one per node
    gpus_per_node: int = Field(1, gt=0)  # processes (one per GPU) per pod
    gpu_resource: str = "nvidia.com/gpu"  # extended resource name of the GPUs
    cpu: str | None = None  # CPU request per pod, e.g. "32"
    memory: str | None = None  # memory request per pod, e.g. "256Gi"
    env: dict[str, str] = Field(default_factory=dict)  # extra environment (e.g. NCCL settings, MLFLOW_RUN_ID)
    runtime: str = "torch-distributed"  # ClusterTrainingRuntime a TrainJob refers to
    node_selector: dict[str, str] = Field(default_factory=dict)  # PyTorchJob only: node labels of the GPU pool
    backoff_limit: int = Field(3, ge=0)  # PyTorchJob only: restarts before the job fails

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not _DNS_LABEL.match(name):
            raise ValueError(f"name {name!r} is not a DNS label (lower-case letters, digits and '-', at most 63)")
        return name

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node


def check_world_size(job: MultiNodeJob, stage: StageConfig) -> StageConfig:
    """``stage`` at the job's world size; refuses when the global batch cannot be met exactly."""
    try:
        return StageConfig(**(stage.model_dump() | {"world_size": job.world_size}))
    except ValidationError as exc:
        reasons = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise ValueError(
            f"job {job.name!r}: {job.num_nodes} nodes x {job.gpus_per_node} GPUs cannot train stage "
            f"{stage.stage!r}: {reasons}"
        ) from None


def _resources(job: MultiNodeJob) -> dict[str, Any]:
    requests: dict[str, str] = {job.gpu_resource: str(job.gpus_per_node)}
    if job.cpu:
        requests["cpu"] = job.cpu
    if job.memory:
        requests["memory"] = job.memory
    return {"requests": requests, "limits": {job.gpu_resource: str(job.gpus_per_node)}}


def _env(job: MultiNodeJob, stage: StageConfig) -> list[dict[str, str]]:
    env = {"BETTERSYNTH_WORLD_SIZE": str(stage.world_size),
           "BETTERSYNTH_GRADIENT_ACCUMULATION": str(stage.gradient_accumulation_steps)} | job.env
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _labels(job: MultiNodeJob, stage: StageConfig) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "bettersynth", "bettersynth/stage": stage.stage,
            "bettersynth/seed": str(stage.seed)}


def trainjob_manifest(job: MultiNodeJob, stage: StageConfig) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running ``job.command`` on N nodes x G processes."""
    stage = check_world_size(job, stage)
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": _labels(job, stage)},
        "spec": {
            "runtimeRef": {"name": job.runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": job.image,
                "command": list(job.command),
                "numNodes": job.num_nodes,
                "numProcPerNode": job.gpus_per_node,
                "resourcesPerNode": _resources(job),
                "env": _env(job, stage),
            },
        },
    }


def pytorchjob_manifest(job: MultiNodeJob, stage: StageConfig) -> dict[str, Any]:
    """A Training Operator v1 ``PyTorchJob``: one Master and N-1 Workers, ``nprocPerNode`` G."""
    stage = check_world_size(job, stage)

    def replica(count: int) -> dict[str, Any]:
        pod: dict[str, Any] = {"containers": [{
            "name": "pytorch",  # the operator looks for this container name
            "image": job.image,
            "command": list(job.command),
            "resources": _resources(job),
            "env": _env(job, stage),
        }]}
        if job.node_selector:
            pod["nodeSelector"] = dict(job.node_selector)
        return {"replicas": count, "restartPolicy": "OnFailure", "template": {"spec": pod}}

    specs = {"Master": replica(1)}
    if job.num_nodes > 1:
        specs["Worker"] = replica(job.num_nodes - 1)
    return {
        "apiVersion": PYTORCHJOB_API,
        "kind": "PyTorchJob",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": _labels(job, stage)},
        "spec": {
            "nprocPerNode": str(job.gpus_per_node),
            "runPolicy": {"backoffLimit": job.backoff_limit, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": specs,
        },
    }
