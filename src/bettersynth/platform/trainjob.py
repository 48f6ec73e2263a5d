"""Multi-node training specs: a Kubeflow Trainer ``TrainJob`` (and the runtime it uses) or a ``PyTorchJob``.

Why: past one node, a pipeline step cannot train in its own pod; it submits a
job that the cluster's training operator runs as N pods x G GPUs under
``torchrun``, then waits for it. The spec is derived from the same settings as
the single-node run (world size = N x G must divide the global batch exactly),
so a config that trains on one node scales without edits, and the generated
manifest is plain data that tests can read. The pods land where the cluster
profile puts the ``train`` step (node selector, tolerations, PVCs, Secrets).

Kubeflow Trainer: v2.2 and v2.3 are supported. Placement reaches the pods
through ``spec.runtimePatches`` (v2.2 removed ``podTemplateOverrides``; an API
server prunes an unknown field silently, so an older or newer schema is
refused by ``train.launch.check_trainer_crd`` instead of losing the node pool). The
``ClusterTrainingRuntime`` the jobs refer to is ours (``runtime_manifest``,
shipped as ``k8s/runtimes/``): torchrun on the ``node`` job, Pod Security
``restricted`` contexts and a bounded number of restarts.

Example::

    command = torchrun_command("TrainJob", 2, 8, ["-m", "bettersynth.train.worker", "/mnt/shared/job/spec.json"])
    job = MultiNodeJob(name="mgm-align-seed0", image="registry/bettersynth:0.1.0", num_nodes=2, gpus_per_node=8,
                       command=command, volumes=[PvcVolume(claim="bettersynth-shared", mount_path="/mnt/shared")])
    manifest = MANIFESTS["trainjob"](job, defaults_for("align"))  # kubectl apply -f, or the Kubernetes API:
    runtime = runtime_manifest()                                   # the ClusterTrainingRuntime it names
    submit_and_wait(manifest, timeout_s=24 * 3600)  # bettersynth.train.launch: create, poll, delete on cancel
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bettersynth.platform.placement import PRIORITY_LABEL, ClusterProfile
from bettersynth.train.config import StageConfig

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
PYTORCHJOB_API = "kubeflow.org/v1"
TRAINJOB_CONTAINER = "node"  # the trainer container (and replicated job) of Trainer's torch runtimes
RUNTIME_NAME = "bettersynth-torch"  # the ClusterTrainingRuntime bettersynth ships (k8s/runtimes/)
PATCH_MANAGER = "bettersynth.io/placement"  # owner of our entry in a TrainJob's runtimePatches
# The label by which Trainer applies a TrainJob's `trainer` fields (image, command, resources, env) to a job.
ANCESTOR_LABEL = {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
PYTORCHJOB_CONTAINER = "pytorch"  # the operator looks for this container name

# How torchrun finds its peers. Trainer v2 sets PET_NNODES/PET_NODE_RANK/PET_MASTER_ADDR/PET_MASTER_PORT,
# which torchrun reads by itself; the Training Operator sets RANK (the pod's index) and MASTER_ADDR/PORT,
# which torchrun does not read: the kubelet substitutes them into the command ($(VAR) expansion).
RENDEZVOUS_ARGS: dict[str, list[str]] = {
    "TrainJob": [],
    "PyTorchJob": ["--node_rank=$(RANK)", "--master_addr=$(MASTER_ADDR)", "--master_port=$(MASTER_PORT)"],
}


class PvcVolume(BaseModel):
    """A PersistentVolumeClaim every pod of the job mounts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    claim: str  # PersistentVolumeClaim name (ReadWriteMany: all nodes mount it at once)
    mount_path: str  # where the training processes see it


class SecretEnvVar(BaseModel):
    """An environment variable read from a Secret (credentials never appear in the spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str  # environment variable in the pods
    secret: str  # Secret name
    key: str  # key in the Secret
    optional: bool = False  # start even when the Secret is missing


class MultiNodeJob(BaseModel):
    """Where and how big a distributed stage runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # Kubernetes object name (DNS label: lower-case letters, digits, '-')
    namespace: str = "default"  # namespace the job is created in
    image: str  # training image (carries bettersynth and the gpu extra)
    command: list[str] = Field(min_length=1)  # what each pod runs (see `torchrun_command`)
    num_nodes: int = Field(1, gt=0)  # pods, one per node
    gpus_per_node: int = Field(1, gt=0)  # processes (one per GPU) per pod
    gpu_resource: str = "nvidia.com/gpu"  # extended resource name of the GPUs
    cpu: str | None = None  # CPU request per pod, e.g. "32"
    memory: str | None = None  # memory request per pod, e.g. "256Gi"
    env: dict[str, str] = Field(default_factory=dict)  # extra environment (e.g. NCCL settings, MLFLOW_RUN_ID)
    secret_env: list[SecretEnvVar] = Field(default_factory=list)  # Secret-backed environment (MLflow, S3 keys)
    runtime: str = RUNTIME_NAME  # ClusterTrainingRuntime a TrainJob refers to
    active_deadline_s: int | None = Field(None, gt=0)  # TrainJob: fail (DeadlineExceeded) after this long
    node_selector: dict[str, str] = Field(default_factory=dict)  # node labels of the GPU pool
    tolerations: list[dict[str, Any]] = Field(default_factory=list)  # taints of the GPU pool (k8s Toleration objects)
    volumes: list[PvcVolume] = Field(default_factory=list)  # PVCs mounted in every pod (shared checkpoints, data)
    shm_size: str | None = None  # /dev/shm as a memory-backed emptyDir (DataLoader workers, NCCL)
    image_pull_secrets: list[str] = Field(default_factory=list)  # Secrets for a private registry
    pod_labels: dict[str, str] = Field(default_factory=dict)  # extra labels on the pods (e.g. priority class)
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


def torchrun_command(kind: str, num_nodes: int, gpus_per_node: int, entry: list[str]) -> list[str]:
    """``torchrun`` for N nodes x G processes running ``entry`` (e.g. ``["-m", "bettersynth.train.worker", spec]``)."""
    try:
        rendezvous = RENDEZVOUS_ARGS[kind]
    except KeyError:
        raise ValueError(f"kind {kind!r}: expected one of {sorted(RENDEZVOUS_ARGS)}") from None
    return ["torchrun", f"--nnodes={num_nodes}", f"--nproc_per_node={gpus_per_node}", *rendezvous, *entry]


def placement_fields(profile: ClusterProfile, step: str = "train", pool_name: str | None = None) -> dict[str, Any]:
    """The ``MultiNodeJob`` fields the cluster profile implies for ``step`` (in pool ``pool_name``, if given).

    The job's pods go where the step's pod would: same node selector,
    tolerations, accelerator resource, /dev/shm, image, pull secrets, PVCs,
    plain and Secret-backed environment. Requests stay the job's own (a pool's are sized
    for one step pod, not a whole node). ``pool_name`` lets the waiting step
    sit on a CPU pool while the job takes the GPU pool.
    """
    if pool_name is not None and pool_name not in profile.pools:
        raise ValueError(f"multinode.pool: unknown pool {pool_name!r} (pools: {sorted(profile.pools)})")
    pool = profile.pools[pool_name] if pool_name is not None else profile.pool_for(step)
    fields: dict[str, Any] = {
        "node_selector": dict(pool.node_selector),
        "tolerations": [t.model_dump(exclude_none=True) for t in pool.tolerations],
        "shm_size": pool.shm_size,
        "image_pull_secrets": list(profile.image_pull_secrets),
        "volumes": [PvcVolume(claim=v.claim, mount_path=v.mount_path)
                    for v in profile.volumes if v.steps is None or step in v.steps],
        "secret_env": [SecretEnvVar(name=env, secret=s.secret, key=key, optional=s.optional)
                       for s in profile.secrets if s.steps is None or step in s.steps for key, env in s.env.items()],
        "pod_labels": {PRIORITY_LABEL: pool.priority_class} if pool.priority_class else {},
        "env": dict(profile.env),  # e.g. MLFLOW_TRACKING_URI: the pods log where the steps do
    }
    if pool.accelerator_type:
        fields["gpu_resource"] = pool.accelerator_type
    if pool.image:
        fields["image"] = profile.images[pool.image]
    return fields


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
    """Limits equal to requests: a request above a namespace's default limit (LimitRange) is refused,
    and a training gang gets Guaranteed QoS (not evicted first under memory pressure)."""
    requests: dict[str, str] = {job.gpu_resource: str(job.gpus_per_node)}
    if job.cpu:
        requests["cpu"] = job.cpu
    if job.memory:
        requests["memory"] = job.memory
    return {"requests": requests, "limits": dict(requests)}


def _env(job: MultiNodeJob, stage: StageConfig) -> list[dict[str, Any]]:
    env = {"BETTERSYNTH_WORLD_SIZE": str(stage.world_size),
           "BETTERSYNTH_GRADIENT_ACCUMULATION": str(stage.gradient_accumulation_steps)} | job.env
    plain: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return plain + [{"name": s.name, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key, "optional": s.optional}}}
                    for s in job.secret_env]


def _labels(job: MultiNodeJob, stage: StageConfig) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "bettersynth", "bettersynth/stage": stage.stage,
            "bettersynth/seed": str(stage.seed)}


def _volume_name(claim: str) -> str:
    return ("pvc-" + re.sub(r"[^a-z0-9-]", "-", claim.lower()))[:63].rstrip("-")


def _volumes(job: MultiNodeJob) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Pod volumes (one per claim, /dev/shm) and the container's mounts of them."""
    volumes: dict[str, dict[str, Any]] = {}
    mounts: list[dict[str, str]] = []
    for pvc in job.volumes:
        name = _volume_name(pvc.claim)
        volumes.setdefault(name, {"name": name, "persistentVolumeClaim": {"claimName": pvc.claim}})
        mounts.append({"name": name, "mountPath": pvc.mount_path})
    if job.shm_size:
        volumes["dshm"] = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}}
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return list(volumes.values()), mounts


def _pod_spec(job: MultiNodeJob) -> dict[str, Any]:
    """Pod-level placement shared by both kinds; keys only where the job sets something."""
    volumes, _ = _volumes(job)
    spec: dict[str, Any] = {
        "nodeSelector": dict(job.node_selector),
        "tolerations": [dict(t) for t in job.tolerations],
        "volumes": volumes,
        "imagePullSecrets": [{"name": s} for s in job.image_pull_secrets],
    }
    return {k: v for k, v in spec.items() if v}


def trainjob_manifest(job: MultiNodeJob, stage: StageConfig) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running ``job.command`` on N nodes x G processes.

    Placement and volumes go through ``runtimePatches`` (Trainer >= 2.2) on
    the runtime's ``node`` job; environment, including Secret references,
    through ``trainer.env`` (the API refuses env patches of that container).
    """
    stage = check_world_size(job, stage)
    spec: dict[str, Any] = {
        "runtimeRef": {"name": job.runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": {
            "image": job.image,
            "command": list(job.command),
            "numNodes": job.num_nodes,
            "numProcPerNode": job.gpus_per_node,
            "resourcesPerNode": _resources(job),
            "env": _env(job, stage),
        },
    }
    if job.active_deadline_s:
        spec["activeDeadlineSeconds"] = job.active_deadline_s
    pod = _pod_spec(job)
    _, mounts = _volumes(job)
    if mounts:
        pod["containers"] = [{"name": TRAINJOB_CONTAINER, "volumeMounts": mounts}]
    if pod or job.pod_labels:
        template: dict[str, Any] = {"spec": pod} if pod else {}
        if job.pod_labels:
            template["metadata"] = {"labels": dict(job.pod_labels)}
        node = {"name": TRAINJOB_CONTAINER, "template": {"spec": {"template": template}}}
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER,
                                   "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node]}}}}]
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": _labels(job, stage)},
        "spec": spec,
    }


def runtime_manifest(name: str = RUNTIME_NAME, image: str = "bettersynth-gpu:0.1.0", max_restarts: int = 3,
                     run_as_user: int = 1000, run_as_group: int = 1000) -> dict[str, Any]:
    """The ``ClusterTrainingRuntime`` our TrainJobs refer to: torchrun on one ``node`` job per TrainJob.

    Why our own: the upstream ``torch-distributed`` runtime runs as root with
    no security context, which a namespace under Pod Security ``restricted``
    refuses, and restarts without a bound. Here every pod is non-root with
    seccomp and no capabilities; a failed pod fails its Job at once
    (``backoffLimit: 0``) and the JobSet restarts the whole gang at most
    ``max_restarts`` times (training resumes from its checkpoints), then the
    TrainJob fails with the operator's reason. ``image`` is only a default:
    each TrainJob sets its own.
    """
    pod_security = {"runAsNonRoot": True, "runAsUser": run_as_user, "runAsGroup": run_as_group,
                    "fsGroup": run_as_group, "seccompProfile": {"type": "RuntimeDefault"}}
    container_security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                          "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    node = {
        "name": TRAINJOB_CONTAINER,
        "template": {
            "metadata": {"labels": dict(ANCESTOR_LABEL)},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "securityContext": pod_security,
                    "containers": [{"name": TRAINJOB_CONTAINER, "image": image, "securityContext": container_security}],
                }},
            },
        },
    }
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch",
                                              "app.kubernetes.io/part-of": "bettersynth"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {"failurePolicy": {"maxRestarts": max_restarts}, "replicatedJobs": [node]}},
        },
    }


def pytorchjob_manifest(job: MultiNodeJob, stage: StageConfig) -> dict[str, Any]:
    """A Training Operator v1 ``PyTorchJob``: one Master and N-1 Workers, ``nprocPerNode`` G."""
    stage = check_world_size(job, stage)
    _, mounts = _volumes(job)

    def replica(count: int) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": PYTORCHJOB_CONTAINER,
            "image": job.image,
            "command": list(job.command),
            "resources": _resources(job),
            "env": _env(job, stage),
        }
        if mounts:
            container["volumeMounts"] = mounts
        template: dict[str, Any] = {"spec": {"containers": [container], **_pod_spec(job)}}
        if job.pod_labels:
            template["metadata"] = {"labels": dict(job.pod_labels)}
        return {"replicas": count, "restartPolicy": "OnFailure", "template": template}

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


JobKindName = Literal["trainjob", "pytorchjob"]
# The manifest builder of each kind the train YAML's `multinode.kind` names.
MANIFESTS: dict[str, Callable[[MultiNodeJob, StageConfig], dict[str, Any]]] = {
    "trainjob": trainjob_manifest,
    "pytorchjob": pytorchjob_manifest,
}
KIND_NAMES: dict[str, str] = {"trainjob": "TrainJob", "pytorchjob": "PyTorchJob"}  # setting -> API kind


class MultiNodeSettings(BaseModel):
    """The train YAML's ``multinode:`` section: run each train step as a job of N nodes x G GPUs.

    With world size (``num_nodes`` x ``gpus_per_node``) above 1, the train
    step stages its inputs on the shared PVC, submits the job, waits for it and
    copies the result back into its output artifact; otherwise it trains in
    its own pod as before.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKindName = "trainjob"  # trainjob: Kubeflow Trainer v2; pytorchjob: Training Operator v1
    num_nodes: int = Field(1, gt=0)  # pods, one per node
    gpus_per_node: int = Field(1, gt=0)  # training processes (GPUs) per pod
    shared_pvc: str  # ReadWriteMany PVC for inputs, checkpoints and results; the train step must mount it too
    shared_mount: str = "/mnt/shared"  # where the train step's pod and the job's pods mount `shared_pvc`
    image: str | None = None  # training image; None: the profile's image for the train step, else $BETTERSYNTH_IMAGE
    namespace: str | None = None  # None: the train step's own namespace
    runtime: str = RUNTIME_NAME  # ClusterTrainingRuntime of a TrainJob (k8s/runtimes/ ships it)
    profile: str | None = None  # cluster profile YAML (relative to this file) whose train pool the pods use
    profile_step: str = "train"  # the step name whose pool, PVCs and Secrets the pods get
    pool: str | None = None  # a profile pool for the pods instead of profile_step's (e.g. the step waits on cpu)
    cpu: str | None = None  # CPU request per pod, e.g. "32"
    memory: str | None = None  # memory request per pod, e.g. "512Gi"
    env: dict[str, str] = Field(default_factory=dict)  # extra environment, e.g. {NCCL_DEBUG: WARN}
    backoff_limit: int = Field(3, ge=0)  # PyTorchJob: pod restarts before the job fails (resumes from checkpoints)
    timeout_s: float = Field(7 * 24 * 3600, gt=0)  # give up (and delete the job) after this long
    start_timeout_s: float = Field(3600, gt=0)  # fail (and delete the job) when no pod runs by then: quota, GPUs
    poll_s: float = Field(30.0, gt=0)  # seconds between status checks
    keep_workdir: bool = False  # keep the job and its folder on the PVC after a success (debugging)

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node
