"""Where each pipeline step runs on a cluster: node pools from a cluster profile YAML.

Why: GPU pools differ per cluster (labels, taints, accelerator names); the
pipeline code names *steps*, the profile maps steps to pools, so the same
pipeline compiles for GKE, EKS or an on-prem cluster without code changes.
Local runs (``kfp.local``) ignore all of this.

Example::

    profile = load_profile("k8s/profiles/generic.yaml")
    place(train_task, profile, "train")
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


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


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str  # e.g. generic-nvidia
    pools: dict[str, Pool]  # pool name -> how to reach it
    steps: dict[str, str]  # step name -> pool name; steps not listed go to `default_pool`
    default_pool: str = "cpu"

    def pool_for(self, step: str) -> Pool:
        name = self.steps.get(step, self.default_pool)
        if name not in self.pools:
            raise ValueError(f"profile {self.name!r}: step {step!r} maps to unknown pool {name!r}")
        return self.pools[name]


def load_profile(path: str | Path) -> ClusterProfile:
    """Parse and validate a cluster profile; errors name the file and the field."""
    path = Path(path)
    try:
        return ClusterProfile.model_validate(yaml.safe_load(path.read_text()))
    except Exception as exc:  # pydantic's message names the field
        raise ValueError(f"{path}: invalid cluster profile: {exc}") from exc


def place(task, profile: ClusterProfile, step: str):
    """Apply the pool of ``step`` to a KFP task: selector, tolerations, accelerators, resources, shm."""
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
    return task
