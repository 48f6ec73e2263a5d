"""The TrainJob and runtime a multi-node train step submits fit Kubeflow Trainer v2.3.0, and their pods pass PSS restricted.

Checked two ways: a round trip through Trainer v2.3.0's own API models
(kubeflow-trainer-api, a dev dependency: always runs) and, where the release's
CRDs sit beside the repository (``../shared/reference``), field by field
against their structural schemas, as the API server prunes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubeflow_trainer_api import models as trainer_models

from bettersynth.cli.main import main
from bettersynth.platform.trainjob import ANCESTOR_LABEL, runtime_manifest
from bettersynth.train.launch import check_trainer_crd
from tests.k8s.k8s_schema import restricted_violations, schema_errors
from tests.train.fake_k8s import trainer_crd

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "configs" / "train" / "mgm2b_4x8.example.yaml"
REFERENCE = ROOT.parent / "shared" / "reference" / "kubeflow-trainer-v2.3.0"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"Trainer v2.3.0 CRDs not at {REFERENCE}")
MODELS = {"TrainJob": trainer_models.TrainerV1alpha1TrainJob,
          "ClusterTrainingRuntime": trainer_models.TrainerV1alpha1ClusterTrainingRuntime}
CRDS = {"TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
        "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml"}


@pytest.fixture(scope="module")
def printed() -> list[dict]:
    """What `bettersynth trainjob` prints for the shipped 4 x 8 GPU example on GKE."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["trainjob", "--train-config", str(EXAMPLE), "--profile", str(ROOT / "k8s/profiles/gke.yaml")]) == 0
    return list(yaml.safe_load_all(out.getvalue()))


def _schema(kind: str) -> dict:
    crd = yaml.safe_load((REFERENCE / CRDS[kind]).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _pod(trainjob: dict, runtime: dict) -> dict:
    """The `node` pod Trainer builds: the runtime's template with our runtimePatches and the trainer fields applied."""
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = copy.deepcopy(node["template"]["spec"]["template"]["spec"])
    [patch] = trainjob["spec"]["runtimePatches"]
    [patched] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    extra = patched["template"]["spec"]["template"]["spec"]
    for key, value in extra.items():
        if key != "containers":
            pod[key] = value
    containers = {c["name"]: c for c in pod["containers"]}
    for container in extra.get("containers", []):
        containers[container["name"]].update(container)
    trainer = trainjob["spec"]["trainer"]
    containers["node"].update(image=trainer["image"], command=trainer["command"], env=trainer["env"])
    return pod


def test_prints_the_job_and_the_runtime_it_names(printed):
    trainjob, runtime = printed
    assert (trainjob["kind"], runtime["kind"]) == ("TrainJob", "ClusterTrainingRuntime")
    assert trainjob["spec"]["runtimeRef"] == {"name": runtime["metadata"]["name"], "apiGroup": "trainer.kubeflow.org",
                                              "kind": "ClusterTrainingRuntime"}
    assert "podTemplateOverrides" not in trainjob["spec"]  # removed in Trainer v2.2: pruned, placement lost
    assert trainjob["spec"]["activeDeadlineSeconds"] > 0
    pod = _pod(trainjob, runtime)
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == {
        "bettersynth-shared", "bettersynth-models", "bettersynth-data"}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://bettersynth-mlflow.bettersynth.svc.cluster.local:5000"
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["template"]["metadata"]["labels"] == ANCESTOR_LABEL  # Trainer applies `trainer` fields to this job


@pytest.mark.parametrize("index", [0, 1], ids=["TrainJob", "ClusterTrainingRuntime"])
def test_objects_round_trip_through_the_v2_3_models(printed, index):
    obj = printed[index]
    assert MODELS[obj["kind"]].from_dict(obj).to_dict() == obj


def test_the_model_round_trip_catches_a_field_trainer_dropped(printed):
    old = copy.deepcopy(printed[0])
    old["spec"]["podTemplateOverrides"] = old["spec"].pop("runtimePatches")
    assert MODELS["TrainJob"].from_dict(old).to_dict() != old


@needs_reference
@pytest.mark.parametrize("index", [0, 1], ids=["TrainJob", "ClusterTrainingRuntime"])
def test_objects_fit_the_v2_3_crd_schemas(printed, index):
    obj = printed[index]
    assert schema_errors(obj, _schema(obj["kind"])) == []


@needs_reference
def test_the_schema_check_names_a_pruned_field(printed):
    old = copy.deepcopy(printed[0])
    old["spec"]["podTemplateOverrides"] = []
    old["spec"]["trainer"]["numNodes"] = "4"
    assert schema_errors(old, _schema("TrainJob")) == [
        ".spec.trainer.numNodes: expected integer, got str",
        ".spec.podTemplateOverrides: unknown field (the API server would prune it)"]


def test_shipped_runtime_is_the_generated_one():
    shipped = yaml.safe_load((ROOT / "k8s" / "runtimes" / "bettersynth-torch.yaml").read_text())
    assert shipped == runtime_manifest(), "regenerate k8s/runtimes/bettersynth-torch.yaml from runtime_manifest()"


def test_job_pods_pass_pod_security_restricted(printed):
    trainjob, runtime = printed
    assert restricted_violations(_pod(trainjob, runtime)) == []
    bare = {"containers": [{"name": "node", "image": "pytorch/pytorch"}], "volumes": [{"name": "h", "hostPath": {}}]}
    assert restricted_violations(bare) == [  # the upstream torch runtime's pods, plus a hostPath
        "pod: volume h of type ['hostPath']", "pod/node: allowPrivilegeEscalation is not false",
        "pod/node: runAsNonRoot is not true", "pod/node: capabilities must drop ALL (and add at most NET_BIND_SERVICE)",
        "pod/node: seccompProfile is None"]


@needs_reference
def test_the_v2_3_release_is_accepted():
    check_trainer_crd(yaml.safe_load((REFERENCE / CRDS["TrainJob"]).read_text()))


def test_other_trainer_releases_are_refused_with_what_to_do():
    check_trainer_crd(trainer_crd())
    with pytest.raises(ValueError, match=r"podTemplateOverrides \(Trainer before v2.2\).*supports Kubeflow Trainer v2.2"):
        check_trainer_crd(trainer_crd(("runtimeRef", "trainer", "podTemplateOverrides")))
    with pytest.raises(ValueError, match=r"serves \['v1'\], not trainer.kubeflow.org/v1alpha1"):
        check_trainer_crd(trainer_crd(version="v1"))


def test_the_runner_may_read_exactly_what_the_train_step_checks():
    import subprocess

    rendered = list(yaml.safe_load_all(subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "runtimes")],
                                                      capture_output=True, text=True, check=True).stdout))
    kinds = {d["kind"]: d for d in rendered}
    assert kinds["ClusterTrainingRuntime"] == runtime_manifest()
    assert kinds["ClusterRole"]["rules"] == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "resourceNames": ["trainjobs.trainer.kubeflow.org"], "verbs": ["get"]},
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
         "resourceNames": [runtime_manifest()["metadata"]["name"]], "verbs": ["get"]}]
    base = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all((ROOT / "k8s/base/rbac.yaml").read_text())}
    [subject] = kinds["ClusterRoleBinding"]["subjects"]
    assert ("ServiceAccount", subject["name"]) in base and subject["namespace"] == "bettersynth"
