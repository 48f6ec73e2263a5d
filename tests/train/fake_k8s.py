"""A loopback HTTP server speaking the slice of the Kubernetes custom-object API a training job uses.

Shared by the launch tests and the multi-node step tests: a real ``kubernetes``
client talks to it over HTTP, so the requests and the manifest are what a
cluster would receive. ``on_create`` stands in for the training operator: it
runs when a job is created and may set the statuses that later GETs return.
"""

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bettersynth.train.launch import custom_objects_api

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainjobs.trainer.kubeflow.org"
RUNTIMES_PATH = "/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes"


def trainer_crd(spec_fields: tuple[str, ...] = ("runtimeRef", "trainer", "runtimePatches"),
                version: str = "v1alpha1") -> dict:
    """The part of a TrainJob CRD the release check reads: which fields ``spec`` declares (v2.3's by default)."""
    schema = {"properties": {"spec": {"properties": {field: {"type": "object"} for field in spec_fields}}}}
    return {"kind": "CustomResourceDefinition", "metadata": {"name": "trainjobs.trainer.kubeflow.org"},
            "spec": {"versions": [{"name": version, "served": True, "schema": {"openAPIV3Schema": schema}}]}}


def condition(kind: str, status: str = "True", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": kind + "Reason", "message": message}


class FakeCluster:
    """The slice of the API server a custom resource uses: create, get (status advances per GET), delete."""

    def __init__(self, statuses: list[dict]) -> None:
        self.statuses, self.requests = statuses, []
        # Trainer v2.3 with bettersynth's runtime applied: what a prepared cluster serves
        self.objects: dict[str, dict] = {CRD_PATH: trainer_crd(),
                                         f"{RUNTIMES_PATH}/bettersynth-torch": {"metadata": {"name": "bettersynth-torch"}}}
        self.create_error: int | None = None
        self.on_create: Callable[[dict], None] | None = None  # the "operator": runs the job, sets statuses
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
                if cluster.on_create is not None:
                    cluster.on_create(body)
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

    def set_status(self, status: dict) -> None:
        self.statuses[:] = [status]

    def jobs(self) -> dict[str, dict]:
        """The namespaced objects (the jobs), without the cluster-scoped CRD and runtime."""
        return {path: obj for path, obj in self.objects.items() if "/namespaces/" in path}

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


def clusters() -> Iterator[Callable[[list[dict]], FakeCluster]]:
    """Body of a ``cluster_with`` fixture: a factory of fake clusters, all shut down afterwards.

    Example::

        @pytest.fixture
        def cluster_with():
            yield from clusters()
    """
    started: list[FakeCluster] = []

    def make(statuses: list[dict]) -> FakeCluster:
        started.append(FakeCluster(statuses))
        return started[-1]

    yield make
    for c in started:
        c.server.shutdown()
        c.server.server_close()
