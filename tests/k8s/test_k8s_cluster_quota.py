"""Quotas, LimitRanges and cluster profiles agree: every pool's pods, and the multi-node example, are admitted.

The API server's admission is replayed on plain data: a request defaults to
its limit, LimitRanger fills what a container leaves out (``default`` limits,
``defaultRequest``), then a request above its limit, a limit above ``max`` or
a missing limit under ``max`` is refused, and the ResourceQuota refuses a pod
without the resources it meters or beyond what is left.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from kubernetes.utils import parse_quantity

from bettersynth.platform.placement import ClusterProfile, Pool, load_profile
from bettersynth.platform.trainjob import MultiNodeJob, placement_fields, trainjob_manifest
from bettersynth.train.config import defaults_for
from tests.k8s.test_k8s_manifests import PROFILE_OF_OVERLAY, needs_kubectl, pod_specs, render

EXAMPLE = Path("configs/train/mgm2b_4x8.example.yaml")
GPU = "nvidia.com/gpu"
SIDECAR: dict = {}  # Argo's wait container: sized by nobody, so by the LimitRange defaults


def admit(resources: dict, limit_range: dict) -> tuple[dict, list[str]]:
    """A container's resources after defaulting and LimitRanger, and why the API server would refuse it."""
    limits = dict(resources.get("limits", {}))
    requests = dict(limits) | dict(resources.get("requests", {}))  # an unset request defaults to the limit
    problems = []
    for item in limit_range["spec"]["limits"]:
        if item["type"] != "Container":
            continue
        limits = dict(item.get("default", {})) | limits
        requests = dict(item.get("defaultRequest", {})) | requests
        for name, cap in item.get("max", {}).items():
            if name not in limits:
                problems.append(f"max {name} is {cap} but no limit is set")
            elif parse_quantity(limits[name]) > parse_quantity(cap):
                problems.append(f"{name} limit {limits[name]} above max {cap}")
    for name in requests.keys() & limits.keys():
        if parse_quantity(requests[name]) > parse_quantity(limits[name]):
            problems.append(f"{name} request {requests[name]} above limit {limits[name]}")
    return {"requests": requests, "limits": limits}, problems


def usage(containers: list[dict], quota: dict) -> tuple[dict[str, Decimal], list[str]]:
    """What admitted containers use of each metered resource, and the containers the quota refuses outright."""
    used = dict.fromkeys(quota["spec"]["hard"], Decimal(0))
    problems = []
    for container in containers:
        for key in used:
            kind, _, name = key.partition(".")
            if kind not in ("requests", "limits"):
                continue
            if name in container[kind]:
                used[key] += parse_quantity(container[kind][name])
            elif name in ("cpu", "memory"):  # the quota refuses a pod that does not state what it meters
                problems.append(f"states no {key}")
    return used, problems


def over(used: dict[str, Decimal], quota: dict) -> dict[str, str]:
    hard = quota["spec"]["hard"]
    return {key: f"{used[key]} > {hard[key]}" for key in used if key in hard and used[key] > parse_quantity(hard[key])}


def pool_container(pool: Pool) -> dict:
    """The step container's resources as placement.place sets them (KFP sets the accelerator as a limit)."""
    requests = {k: v for k, v in (("cpu", pool.cpu_request), ("memory", pool.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", pool.cpu_limit), ("memory", pool.memory_limit)) if v}
    if pool.accelerator_type:
        limits[pool.accelerator_type] = str(pool.accelerator_count)
    return {"requests": requests, "limits": limits}


def services(resources: list[dict]) -> list[dict]:
    """Resources of the overlay's own workloads (MLflow, PostgreSQL), once per replica."""
    return [container.get("resources", {}) for resource, spec in pod_specs(resources)
            for _ in range(resource["spec"].get("replicas", 1)) for container in spec["containers"]]


def overlay_limits(resources: list[dict]) -> tuple[dict, dict]:
    quota = next(r for r in resources if r["kind"] == "ResourceQuota")
    limit_range = next(r for r in resources if r["kind"] == "LimitRange")
    return quota, limit_range


def admitted(containers: list[dict], limit_range: dict) -> list[dict]:
    result = []
    for container in containers:
        final, problems = admit(container, limit_range)
        assert problems == [], (container, problems)
        result.append(final)
    return result


def example_job() -> tuple[ClusterProfile, MultiNodeJob, dict]:
    """The multi-node example's profile, job and the resources of each of its pods, as bettersynth submits them."""
    settings = yaml.safe_load(EXAMPLE.read_text())
    multinode = settings["multinode"]
    profile = load_profile((EXAMPLE.parent / multinode["profile"]).resolve())
    fields = {"image": "bettersynth-gpu"} | placement_fields(profile, multinode.get("profile_step", "train"),
                                                             multinode.get("pool"))
    job = MultiNodeJob(name="example", command=["torchrun"], num_nodes=multinode["num_nodes"],
                       gpus_per_node=multinode["gpus_per_node"], cpu=multinode.get("cpu"),
                       memory=multinode.get("memory"), **fields)
    stage = defaults_for("align", per_device_batch_size=settings["align"]["per_device_batch_size"])
    return profile, job, trainjob_manifest(job, stage)["spec"]["trainer"]["resourcesPerNode"]


@pytest.fixture(scope="module")
def rendered_overlays() -> dict[str, list[dict]]:
    return {name: render(f"k8s/overlays/{name}") for name in PROFILE_OF_OVERLAY}


@needs_kubectl
@pytest.mark.parametrize("overlay", sorted(PROFILE_OF_OVERLAY))
def test_every_pool_of_the_paired_profile_is_admitted_and_fits(overlay, rendered_overlays):
    resources = rendered_overlays[overlay]
    quota, limit_range = overlay_limits(resources)
    profile = load_profile(f"k8s/profiles/{PROFILE_OF_OVERLAY[overlay]}.yaml")
    base = admitted(services(resources), limit_range)
    gpu_budget = parse_quantity(quota["spec"]["hard"][f"requests.{GPU}"])
    for name, pool in profile.pools.items():
        assert pool.cpu_request and pool.cpu_limit and pool.memory_request and pool.memory_limit, (
            f"{profile.name}: pool {name} must state cpu and memory requests and limits (the LimitRange needs limits)")
        step_pod = admitted([pool_container(pool), SIDECAR], limit_range)
        # As many of this pool's pods as the GPU budget admits (one CPU pod otherwise) also fit the CPU and memory budget.
        pods = int(gpu_budget // pool.accelerator_count) if pool.accelerator_count else 1
        assert pods >= 1, f"{overlay}: the GPU budget admits no pod of pool {name}"
        used, problems = usage(base + step_pod * pods, quota)
        assert problems == [] and over(used, quota) == {}, (overlay, name, pods, problems, over(used, quota))


@needs_kubectl
def test_multinode_example_runs_in_its_profiles_overlay(rendered_overlays):
    profile, job, pod = example_job()
    (overlay,) = [o for o, p in PROFILE_OF_OVERLAY.items() if load_profile(f"k8s/profiles/{p}.yaml").name == profile.name]
    resources = rendered_overlays[overlay]
    quota, limit_range = overlay_limits(resources)
    job_pods = admitted([pod] * job.num_nodes, limit_range)
    assert sum(parse_quantity(p["requests"][GPU]) for p in job_pods) == job.world_size
    waiting_step = admitted([pool_container(profile.pool_for("train")), SIDECAR], limit_range)
    used, problems = usage(admitted(services(resources), limit_range) + job_pods + waiting_step, quota)
    assert problems == [] and over(used, quota) == {}, (overlay, problems, over(used, quota))


@needs_kubectl
def test_onprem_budget_is_smaller_and_says_the_example_does_not_fit(rendered_overlays):
    onprem, _ = overlay_limits(rendered_overlays["onprem"])
    cloud, _ = overlay_limits(rendered_overlays["gke"])
    key = f"requests.{GPU}"
    assert parse_quantity(onprem["spec"]["hard"][key]) < parse_quantity(cloud["spec"]["hard"][key])
    _, job, _ = example_job()
    assert job.world_size + 1 > parse_quantity(onprem["spec"]["hard"][key])
    assert "does not fit" in Path("k8s/overlays/onprem/kustomization.yaml").read_text()


def test_admission_replay_refuses_what_the_api_server_refuses():
    limit_range = {"spec": {"limits": [{"type": "Container", "max": {"cpu": "8", "memory": "64Gi"},
                                        "default": {"cpu": "1", "memory": "2Gi"},
                                        "defaultRequest": {"cpu": "250m", "memory": "512Mi"}}]}}
    final, problems = admit({}, limit_range)
    assert problems == [] and final == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    _, problems = admit({"requests": {"memory": "32G"}}, limit_range)  # the default limit undercuts the request
    assert problems == ["memory request 32G above limit 2Gi"]
    _, problems = admit({"limits": {"cpu": "16", "memory": "8Gi"}}, limit_range)
    assert problems == ["cpu limit 16 above max 8"]
    _, problems = admit({}, {"spec": {"limits": [{"type": "Container", "max": {"cpu": "8"}}]}})
    assert problems == ["max cpu is 8 but no limit is set"]
    quota = {"spec": {"hard": {"requests.cpu": "4", f"requests.{GPU}": "1", "limits.memory": "1Gi"}}}
    used, problems = usage([{"requests": {"cpu": "3", GPU: "2"}, "limits": {"memory": "1Gi"}},
                            {"requests": {"cpu": "2"}, "limits": {}}], quota)
    assert problems == ["states no limits.memory"]
    assert over(used, quota) == {"requests.cpu": "5 > 4", f"requests.{GPU}": "2 > 1"}
