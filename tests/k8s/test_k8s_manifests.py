"""Every kustomize overlay renders, validates against the Kubernetes schemas, and passes the pod policy.

kubectl (with built-in kustomize) must be on PATH; kubernetes-validate
carries the schemas, so validation runs offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

OVERLAYS = sorted(p.name for p in Path("k8s/overlays").iterdir() if p.is_dir())
PROFILE_OF_OVERLAY = {"gke": "gke", "eks": "eks", "onprem": "generic"}  # k8s/profiles/<name>.yaml; kfp-standalone has none
KUBERNETES_VERSION = "1.31.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(kubectl is None, reason="kubectl not on PATH (https://kubernetes.io/docs/tasks/tools/)")


def render(path: str) -> list[dict]:
    result = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, render(f"k8s/overlays/{request.param}")


def pod_specs(resources: list[dict]):
    for resource in resources:
        if resource["kind"] not in WORKLOADS:
            continue
        spec = resource["spec"]
        if resource["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        yield resource, spec if resource["kind"] == "Pod" else spec["template"]["spec"]


def policy_violations(resources: list[dict]) -> list[str]:
    """Every container (init ones too) non-root, no capabilities, RuntimeDefault seccomp, no escalation,
    read-only root filesystem, and CPU and memory requests and limits."""
    problems = []
    for resource, spec in pod_specs(resources):
        pod = spec.get("securityContext", {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            where = f"{resource['kind']}/{resource['metadata']['name']}/{container['name']}"
            context = container.get("securityContext", {})
            if not (context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True):
                problems.append(f"{where}: runAsNonRoot is not true")
            if context.get("runAsUser", pod.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            if context.get("capabilities", {}).get("drop") != ["ALL"] or context.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities not drop [ALL]")
            if context.get("seccompProfile", pod.get("seccompProfile", {})).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            resources_ = container.get("resources", {})
            for kind in ("requests", "limits"):
                for name in ("cpu", "memory"):
                    if name not in resources_.get(kind, {}):
                        problems.append(f"{where}: no {name} {kind[:-1]}")
    return problems


@needs_kubectl
def test_overlay_renders_the_platform(rendered):
    overlay, resources = rendered
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for expected in [
        ("Deployment", "bettersynth-mlflow"), ("Service", "bettersynth-mlflow"), ("StatefulSet", "bettersynth-postgres"),
        ("ServiceAccount", "bettersynth-pipeline-runner"), ("Role", "bettersynth-pipeline-runner"),
        ("RoleBinding", "bettersynth-pipeline-runner"), ("PersistentVolumeClaim", "bettersynth-models"),
        ("PersistentVolumeClaim", "bettersynth-data"), ("PriorityClass", "bettersynth-training"),
        ("PriorityClass", "bettersynth-scoring"), ("ResourceQuota", "bettersynth-gpus"),
    ]:
        assert expected in kinds, (overlay, expected)
    assert not any(r["kind"] == "Secret" for r in resources), "Secrets are created by the operator, never rendered"
    priority = {r["metadata"]["name"]: r["value"] for r in resources if r["kind"] == "PriorityClass"}
    assert priority["bettersynth-training"] > priority["bettersynth-scoring"]
    quota = next(r for r in resources if r["kind"] == "ResourceQuota")
    assert int(quota["spec"]["hard"]["requests.nvidia.com/gpu"]) > 0


@needs_kubectl
def test_overlay_validates_against_the_kubernetes_schemas(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    overlay, resources = rendered
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{overlay}: {resource['kind']}/{resource['metadata']['name']}: {exc.message}") from None


@needs_kubectl
def test_every_container_passes_the_pod_policy(rendered):
    overlay, resources = rendered
    assert list(pod_specs(resources)), overlay
    assert policy_violations(resources) == [], overlay


@needs_kubectl
def test_runner_role_is_namespaced_and_narrow():
    resources = render("k8s/base")
    assert not any(r["kind"] in ("ClusterRole", "ClusterRoleBinding") for r in resources)
    role = next(r for r in resources if r["kind"] == "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"]


def test_the_policy_catches_what_it_should():
    pod = {
        "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "c", "securityContext": {
                     "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}}},
    }
    assert policy_violations([pod]) == []
    container = pod["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["limits"]["memory"]
    container["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    pod["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "securityContext": {"runAsUser": 0}}]
    problems = "\n".join(policy_violations([pod]))
    assert "x/c: no memory limit" in problems and "x/c: capabilities" in problems
    assert "x/init: runs as uid 0" in problems and "x/init: no cpu request" in problems


def comments(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))


@needs_kubectl
def test_each_storage_class_is_documented_with_what_to_replace_it_with(rendered):
    overlay, resources = rendered
    text = comments(Path(f"k8s/overlays/{overlay}/kustomization.yaml"))
    assert "Storage classes" in text and "storageClassName" in text, f"{overlay}: no storage class notes"
    claims = [r for r in resources if r["kind"] == "PersistentVolumeClaim"]
    classes = {r["spec"]["storageClassName"] for r in claims if "storageClassName" in r["spec"]}
    for name in classes:
        entry = re.search(rf"^#\s+{re.escape(name)}\s(.*?)(?=^#\s{{1,3}}\S+\s{{2,}}|^# `kubectl|\Z)", text, re.M | re.S)
        assert entry, f"{overlay}: storage class {name} is not explained"
        assert "Elsewhere:" in entry.group(1), f"{overlay}: no replacement named for storage class {name}"
    if classes:  # a cloud's default class is block storage: every shared volume names its RWX class
        unnamed = [r["metadata"]["name"] for r in claims if "storageClassName" not in r["spec"]]
        assert unnamed == [], f"{overlay}: {unnamed} fall back to the default StorageClass"
    else:
        assert "default StorageClass" in text and "ReadWriteMany" in text
