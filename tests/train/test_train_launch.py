"""Submit-and-wait against a real HTTP server on loopback speaking the Kubernetes custom-object API."""

import os
import signal
import threading

import pytest

from bettersynth.platform.trainjob import MultiNodeJob, pytorchjob_manifest, trainjob_manifest
from bettersynth.train import defaults_for
from bettersynth.train.launch import (
    JobCancelled,
    JobFailed,
    JobTimeout,
    check_runtime_installed,
    check_trainer_release,
    delete_job,
    submit_and_wait,
)
from tests.train.fake_k8s import CRD_PATH, RUNTIMES_PATH, clusters, trainer_crd
from tests.train.fake_k8s import condition as _condition

JOB = MultiNodeJob(name="mgm-align-seed0", namespace="ml", image="registry.example/bettersynth:0.1.0",
                   command=["python", "-m", "entry"], num_nodes=2, gpus_per_node=4)


@pytest.fixture
def cluster_with():
    yield from clusters()


TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"


def test_trainjob_is_created_and_waited_for(cluster_with):
    manifest = trainjob_manifest(JOB, defaults_for("align", per_device_batch_size=8))
    cluster = cluster_with([{}, {"conditions": [_condition("Created")]},
                            {"conditions": [_condition("Created"), _condition("Complete", message="done")]}])
    final = submit_and_wait(manifest, cluster.api, timeout_s=10, poll_s=0.01)
    assert final["status"]["conditions"][-1]["type"] == "Complete"
    method, path, body = cluster.requests[0]
    assert (method, path) == ("POST", TRAINJOBS) and body == manifest  # the generated spec, as sent
    assert cluster.methods() == ["POST", "GET", "GET", "GET"]
    assert cluster.requests[1][1] == f"{TRAINJOBS}/mgm-align-seed0"


def test_failed_job_raises_the_operators_reason_and_is_kept(cluster_with):
    manifest = pytorchjob_manifest(JOB, defaults_for("finetune", per_device_batch_size=4))
    cluster = cluster_with([{"conditions": [_condition("Running")]},
                            {"conditions": [_condition("Running", "False"), _condition("Failed", message="OOMKilled")]}])
    with pytest.raises(JobFailed, match="PyTorchJob ml/mgm-align-seed0 failed: FailedReason: OOMKilled"):
        submit_and_wait(manifest, cluster.api, timeout_s=10, poll_s=0.01)
    assert cluster.requests[0][1] == "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"
    assert "DELETE" not in cluster.methods()  # its pods' logs are the evidence


def test_timeout_deletes_the_job(cluster_with):
    cluster = cluster_with([{"conditions": [_condition("Created")]}])
    with pytest.raises(JobTimeout, match="did not finish within 0.2 s"):
        submit_and_wait(trainjob_manifest(JOB, defaults_for("align")), cluster.api, timeout_s=0.2, poll_s=0.02)
    method, path, _ = cluster.requests[-1]
    assert (method, path) == ("DELETE", f"{TRAINJOBS}/mgm-align-seed0?propagationPolicy=Foreground")


def test_sigterm_while_waiting_deletes_the_job(cluster_with):
    cluster = cluster_with([{}])
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(JobCancelled, match="cancelled; deleted the job"):
            submit_and_wait(trainjob_manifest(JOB, defaults_for("align")), cluster.api, timeout_s=30, poll_s=0.02)
    finally:
        timer.cancel()
    assert cluster.methods()[-1] == "DELETE" and not cluster.jobs()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_retried_step_adopts_its_existing_job(cluster_with):
    manifest = trainjob_manifest(JOB, defaults_for("align"))
    cluster = cluster_with([{"conditions": [_condition("Complete")]}])
    cluster.objects[f"{TRAINJOBS}/mgm-align-seed0"] = manifest
    submit_and_wait(manifest, cluster.api, timeout_s=10, poll_s=0.01)
    assert cluster.methods() == ["POST", "GET"]  # 409, then waited for the one already running


def test_api_errors_name_the_job(cluster_with):
    cluster = cluster_with([{}])
    cluster.create_error = 403
    with pytest.raises(RuntimeError, match="cannot create TrainJob ml/mgm-align-seed0: HTTP 403"):
        submit_and_wait(trainjob_manifest(JOB, defaults_for("align")), cluster.api, timeout_s=1, poll_s=0.01)
    gone = cluster_with([{}])
    manifest = trainjob_manifest(JOB, defaults_for("align"))
    thread = threading.Timer(0.05, lambda: gone.objects.clear())
    thread.start()
    with pytest.raises(RuntimeError, match="disappeared while running"):
        submit_and_wait(manifest, gone.api, timeout_s=5, poll_s=0.02)
    with pytest.raises(ValueError, match="kind 'Job'"):
        submit_and_wait(manifest | {"kind": "Job"}, gone.api)


def test_delete_job_removes_it_and_tolerates_it_gone(cluster_with):
    manifest = pytorchjob_manifest(JOB, defaults_for("finetune", per_device_batch_size=4))
    cluster = cluster_with([{}])
    cluster.objects["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/mgm-align-seed0"] = manifest
    delete_job(manifest, cluster.api)
    delete_job(manifest, cluster.api)  # already gone (the fake answers 200 either way; a 404 is ignored too)
    assert not cluster.jobs() and cluster.methods() == ["DELETE", "DELETE"]


def test_current_namespace_is_the_pods_own(tmp_path, monkeypatch):
    from bettersynth.train import launch

    monkeypatch.setattr(launch, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    assert launch.current_namespace() == "default"  # outside a cluster
    (tmp_path / "namespace").write_text("ml-team\n")
    assert launch.current_namespace() == "ml-team"


def test_a_job_that_never_starts_fails_in_bounded_time_with_what_the_operator_said(cluster_with):
    manifest = trainjob_manifest(JOB, defaults_for("align", per_device_batch_size=8))
    pending = {"conditions": [_condition("Created", message="jobset created")],
               "jobsStatus": [{"name": "node", "active": 1, "ready": 0}]}  # pods pending: no GPUs free
    cluster = cluster_with([pending])
    with pytest.raises(JobTimeout, match=r"had not started within 0.05 s.*Created=True CreatedReason: jobset created"):
        submit_and_wait(manifest, cluster.api, timeout_s=60, poll_s=0.01, start_timeout_s=0.05)
    assert cluster.methods()[-1] == "DELETE"


def test_a_started_job_is_not_held_to_the_start_deadline(cluster_with):
    manifest = trainjob_manifest(JOB, defaults_for("align", per_device_batch_size=8))
    running = {"jobsStatus": [{"name": "node", "active": 1, "ready": 1}]}
    done = running | {"conditions": [_condition("Complete")]}
    cluster = cluster_with([running, running, running, running, done])
    submit_and_wait(manifest, cluster.api, timeout_s=60, poll_s=0.02, start_timeout_s=0.03)
    assert "DELETE" not in cluster.methods()


def test_the_trainer_release_and_the_runtime_are_checked_on_the_cluster(cluster_with):
    cluster = cluster_with([{}])
    check_trainer_release(cluster.api)
    check_runtime_installed("bettersynth-torch", cluster.api)
    cluster.objects[CRD_PATH] = trainer_crd(("runtimeRef", "trainer", "podTemplateOverrides"))
    with pytest.raises(ValueError, match="podTemplateOverrides"):
        check_trainer_release(cluster.api)
    del cluster.objects[CRD_PATH]
    with pytest.raises(RuntimeError, match="Kubeflow Trainer is not installed"):
        check_trainer_release(cluster.api)
    del cluster.objects[f"{RUNTIMES_PATH}/bettersynth-torch"]
    with pytest.raises(RuntimeError, match=r"'bettersynth-torch' is not installed: apply k8s/runtimes/"):
        check_runtime_installed("bettersynth-torch", cluster.api)
