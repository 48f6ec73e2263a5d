"""Where and how each pipeline step runs on a cluster, from a cluster profile YAML.

Why: GPU pools, images, volumes and credentials differ per cluster (labels,
taints, accelerator names, registries, secret names); the pipeline code names
*steps*, the profile maps steps to pools, so the same pipeline compiles for
GKE, EKS or an on-prem cluster without code changes. Local runs
(``kfp.local``) ignore all of this.

Example::

    profile = load_profile("k8s/profiles/gke.yaml")
    place(train_task, profile, "train")   # pool, image, PVCs, secrets, retries, caching
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bettersynth.tracking.runs import KFP_RUN_ENV

# KFP's SDK cannot set priorityClassName; an admission policy reads this label instead.
PRIORITY_LABEL = "bettersynth.io/priority-class"
# The label KFP's backend puts on every task pod: the KFP run it belongs to (its launcher reads it too).
KFP_RUN_LABEL = "pipeline/runid"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str  # taint key, e.g. nvidia.com/gpu
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None  # only with operator Equal
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_selector: dict[str, str] = Field(default_factory=dict)  # node labels that pick the pool
    tolerations: list[Toleration] = Field(default_factory=list)  # taints the pool's nodes carry
    accelerator_type: str | None = None  # resource name, e.g. nvidia.com/gpu; None for CPU pools
    accelerator_count: int = 0  # accelerators per step pod
    cpu_request: str | None = None  # e.g. "4"
    cpu_limit: str | None = None
    memory_request: str | None = None  # e.g. "32G"
    memory_limit: str | None = None
    shm_size: str | None = None  # /dev/shm as a memory-backed emptyDir, for DataLoader workers
    image: str | None = None  # key of `ClusterProfile.images` this pool's steps run in; None keeps the component's image
    preemptible: bool = False  # spot/preemptible nodes: steps here are retried with `ClusterProfile.retry`
    priority_class: str | None = None  # PriorityClass for the pods, as label PRIORITY_LABEL (k8s/extras maps it)


class PvcMount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claim: str  # PersistentVolumeClaim name, e.g. bettersynth-models
    mount_path: str  # where step pods see it, e.g. /mnt/models
    steps: list[str] | None = None  # steps that mount it; None mounts it in every step


class SecretEnv(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: str  # Kubernetes Secret name
    env: dict[str, str]  # key in the Secret -> environment variable in the step pod
    steps: list[str] | None = None  # steps that get it; None gives it to every step
    optional: bool = False  # run even when the Secret is missing

    @model_validator(mode="after")
    def _env_names(self) -> "SecretEnv":
        bad = [name for name in self.env.values() if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"secret {self.secret!r}: env: not environment variable names: {bad}")
        return self


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_retries: int = Field(3, ge=0)  # attempts after the first, on preemptible pools
    backoff_duration: str = "60s"  # wait before the first retry
    backoff_factor: float = 2.0  # growth of the wait per retry
    backoff_max_duration: str = "3600s"  # cap on the wait


class CachingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True  # let KFP reuse outputs of deterministic steps
    uncached_steps: list[str] = Field(default_factory=list)  # steps with side effects KFP can't see (registry, DVC push)


class SecurityPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_as_user: int = Field(1000, ge=1)  # the images' non-root user
    run_as_group: int = Field(1000, ge=1)


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str  # e.g. generic-nvidia
    pools: dict[str, Pool]  # pool name -> how to reach it
    steps: dict[str, str]  # step name -> pool name; steps not listed go to `default_pool`
    default_pool: str = "cpu"
    images: dict[str, str] = Field(default_factory=dict)  # image key -> reference, e.g. gpu: registry/bettersynth-gpu:0.1.0
    image_pull_secrets: list[str] = Field(default_factory=list)  # Secrets for a private registry
    volumes: list[PvcMount] = Field(default_factory=list)  # PVCs (models, data) mounted into steps
    secrets: list[SecretEnv] = Field(default_factory=list)  # credentials reach pods only as Secret-backed env vars
    env: dict[str, str] = Field(default_factory=dict)  # plain environment of every step, e.g. MLFLOW_TRACKING_URI
    retry: RetryPolicy = Field(default_factory=RetryPolicy)  # applied to steps on preemptible pools
    caching: CachingPolicy = Field(default_factory=CachingPolicy)
    security: SecurityPolicy = Field(default_factory=SecurityPolicy)

    @model_validator(mode="after")
    def _references(self) -> "ClusterProfile":
        for step, pool in self.steps.items():
            if pool not in self.pools:
                raise ValueError(f"steps.{step}: unknown pool {pool!r} (pools: {sorted(self.pools)})")
        if self.default_pool not in self.pools:
            raise ValueError(f"default_pool: unknown pool {self.default_pool!r} (pools: {sorted(self.pools)})")
        for name, pool in self.pools.items():
            if pool.image is not None and pool.image not in self.images:
                raise ValueError(f"pools.{name}.image: unknown image key {pool.image!r} (images: {sorted(self.images)})")
            if bool(pool.accelerator_type) != bool(pool.accelerator_count):
                raise ValueError(f"pools.{name}: accelerator_type and accelerator_count go together")
        bad = [name for name in self.env if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"env: not environment variable names: {bad}")
        return self

    def for_local_run(self) -> ClusterProfile:
        """This profile as ``kfp.local`` should apply it: without the cluster's ``env``.

        Why: kfp.local sets a task's env over the process's, so the cluster's
        in-cluster MLflow address would win over the local driver's; locally the
        driver's environment says where MLflow is (node pools and Secrets kfp.local ignores anyway).
        """
        return self.model_copy(update={"env": {}})

    def pool_for(self, step: str) -> Pool:
        return self.pools[self.steps.get(step, self.default_pool)]

    def image_for(self, step: str) -> str | None:
        key = self.pool_for(step).image
        return self.images[key] if key else None


def load_profile(path: str | Path) -> ClusterProfile:
    """Parse and validate a cluster profile; errors name the file and the field."""
    path = Path(path)
    try:
        return ClusterProfile.model_validate(yaml.safe_load(path.read_text()))
    except Exception as exc:  # pydantic's message names the field
        raise ValueError(f"{path}: invalid cluster profile: {exc}") from exc


def _applies(steps: list[str] | None, step: str) -> bool:
    return steps is None or step in steps


def place(task, profile: ClusterProfile, step: str):
    """Apply everything the profile says about ``step`` to a KFP task.

    Pool (selector, tolerations, accelerators, requests/limits, shm), image,
    PVC mounts, plain and Secret-backed env vars, retries on preemptible pools, caching
    and the non-root security context.
    """
    from kfp import kubernetes

    pool = profile.pool_for(step)
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in pool.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    if pool.accelerator_type and pool.accelerator_count:
        task.set_accelerator_type(pool.accelerator_type).set_accelerator_limit(pool.accelerator_count)
    for setter, value in (
        (task.set_cpu_request, pool.cpu_request),
        (task.set_cpu_limit, pool.cpu_limit),
        (task.set_memory_request, pool.memory_request),
        (task.set_memory_limit, pool.memory_limit),
    ):
        if value:
            setter(value)
    if pool.shm_size:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=pool.shm_size)
    if pool.priority_class:
        kubernetes.add_pod_label(task, label_key=PRIORITY_LABEL, label_value=pool.priority_class)
    image = profile.image_for(step)
    if image:
        task.set_container_image(image)
    if profile.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, profile.image_pull_secrets)
    for volume in profile.volumes:
        if _applies(volume.steps, step):
            kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    for name, value in sorted(profile.env.items()):
        task.set_env_variable(name, value)
    # which KFP run the step belongs to, so steps share one MLflow parent run without KFP's MLflow plugin
    kubernetes.use_field_path_as_env(task, env_name=KFP_RUN_ENV, field_path=f"metadata.labels['{KFP_RUN_LABEL}']")
    for secret in profile.secrets:
        if _applies(secret.steps, step):
            kubernetes.use_secret_as_env(task, secret_name=secret.secret, secret_key_to_env=secret.env, optional=secret.optional)
    if pool.preemptible and profile.retry.num_retries:
        retry = profile.retry
        task.set_retry(retry.num_retries, retry.backoff_duration, retry.backoff_factor, retry.backoff_max_duration)
    task.set_caching_options(profile.caching.enabled and step not in profile.caching.uncached_steps)
    kubernetes.set_security_context(
        task, run_as_user=profile.security.run_as_user, run_as_group=profile.security.run_as_group, run_as_non_root=True
    )
    return task
