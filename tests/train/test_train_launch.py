"""Submit-and-wait against a real HTTP server on loopback speaking the Kubernetes custom-object API."""

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bettersynth.train import defaults_for
from bettersynth.train.launch import JobCancelled, JobFailed, JobTimeout, custom_objects_api, submit_and_wait
from bettersynth.train.multinode import MultiNodeJob, pytorchjob_manifest, trainjob_manifest

JOB = MultiNodeJob(name="mgm-align-seed0", namespace="ml", image="registry.example/bettersynth:0.1.0",
                   command=["python", "-m", "entry"], num_nodes=2, gpus_per_node=4)


def _condition(kind: str, status: str = "True", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": kind + "Reason", "message": message}


class FakeCluster:
    """The slice of the API server a custom resource uses: create, get (status advances per GET), delete."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses, self.objects, self.requests = statuses, {}, []
        self.create_error: int | None = None
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                   "message": f"{reason} ({self.path})", "code": code})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cluster.requests.append(("POST", self.path, body))
                if cluster.create_error:
                    return self._status(cluster.create_error, "Forbidden")
                key = f"{self.path}/{body['metadata']['name']}"
                if key in cluster.objects:
                    return self._status(409, "AlreadyExists")
                cluster.objects[key] = body
                self._reply(201, body)

            def do_GET(self):
                cluster.requests.append(("GET", self.path, None))
                if self.path not in cluster.objects:
                    return self._status(404, "NotFound")
                status = cluster.statuses.pop(0) if len(cluster.statuses) > 1 else cluster.statuses[0]
                self._reply(200, cluster.objects[self.path] | {"status": status})

            def do_DELETE(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                cluster.requests.append(("DELETE", self.path, body))
                cluster.objects.pop(self.path.split("?")[0], None)
                self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.api = custom_objects_api(host=f"http://127.0.0.1:{self.server.server_port}")

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


@pytest.fixture
def cluster_with():
    started = []

    def make(statuses):
        started.append(FakeCluster(statuses))
        return started[-1]

    yield make
    for c in started:
        c.server.shutdown()
        c.server.server_close()


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
    assert cluster.methods()[-1] == "DELETE" and not cluster.objects
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
