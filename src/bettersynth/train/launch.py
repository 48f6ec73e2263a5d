"""Submit a multi-node training job (``TrainJob`` or ``PyTorchJob``) to Kubernetes and wait for its outcome.

Why: a pipeline step that trains past one node hands the work to the
cluster's training operator and must then behave like the training itself:
return when the job completes, fail with the operator's reason when it fails,
give up after a deadline, and not leave GPU pods running when the step is
cancelled (KFP sends SIGTERM) or times out. The job's own outcome is read from
its status conditions (``Complete``/``Failed`` for Trainer v2,
``Succeeded``/``Failed`` for the Training Operator). A job whose pods never
all run (no GPUs free, a quota, an image that cannot be pulled) is deleted
after ``start_timeout_s`` with what the operator last said, instead of
holding its place for the whole training deadline. A retried step finds its
job already there (HTTP 409) and waits for it instead of starting a second one.

Example::

    manifest = trainjob_manifest(job, stage_config)
    final = submit_and_wait(manifest, timeout_s=24 * 3600)  # in-cluster credentials, else ~/.kube/config
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TRAINJOB_VERSION = "v1alpha1"
SUPPORTED_TRAINER = "Kubeflow Trainer v2.2-v2.3 (TrainJob v1alpha1 with spec.runtimePatches)"


@dataclass(frozen=True)
class JobKind:
    """Where a kind of job lives in the API and which conditions end it."""

    group: str
    version: str
    plural: str
    succeeded: str  # condition type that means success
    failed: str  # condition type that means failure
    started: Callable[[dict[str, Any]], bool]  # from the status: every pod of the gang ran at least once


def _trainjob_started(status: dict[str, Any]) -> bool:
    """A child Job of the TrainJob's JobSet had all its pods ready (or finished)."""
    return any((j.get("ready") or 0) + (j.get("succeeded") or 0) > 0 for j in status.get("jobsStatus") or [])


def _pytorchjob_started(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Running" and str(c.get("status")) == "True" for c in status.get("conditions") or [])


JOB_KINDS: dict[str, JobKind] = {
    "TrainJob": JobKind("trainer.kubeflow.org", TRAINJOB_VERSION, "trainjobs", "Complete", "Failed", _trainjob_started),
    "PyTorchJob": JobKind("kubeflow.org", "v1", "pytorchjobs", "Succeeded", "Failed", _pytorchjob_started),
}


class JobFailed(RuntimeError):
    """The operator reported the job failed (the message carries its reason)."""


class JobTimeout(TimeoutError):
    """The job did not finish in time; it was deleted."""


class JobCancelled(RuntimeError):
    """The waiting step was told to stop (SIGTERM); the job was deleted."""


def custom_objects_api(host: str | None = None) -> Any:
    """A ``CustomObjectsApi``: in-cluster credentials, else the kubeconfig; ``host`` for a plain URL (tests)."""
    from kubernetes import client, config

    if host is not None:
        configuration = client.Configuration()
        configuration.host = host
        return client.CustomObjectsApi(client.ApiClient(configuration))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def job_outcome(obj: dict[str, Any], kind: JobKind) -> tuple[str, str]:
    """``("succeeded" | "failed" | "running", message)`` from the object's ``status.conditions``."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if str(condition.get("status")) != "True":
            continue
        message = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
        if condition.get("type") == kind.failed:
            return "failed", message
        if condition.get("type") == kind.succeeded:
            return "succeeded", message
    return "running", ""


def submit_and_wait(
    manifest: dict[str, Any],
    api: Any = None,
    timeout_s: float = 7 * 24 * 3600,
    poll_s: float = 30.0,
    max_api_errors: int = 5,
    start_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Create ``manifest`` (or adopt the existing job of that name) and poll until it ends; return the final object.

    Raises ``JobFailed`` (job kept, for its logs), ``JobTimeout`` (also when
    it has not started within ``start_timeout_s``) and ``JobCancelled`` (job
    deleted), or ``RuntimeError`` naming the job for API errors (after
    ``max_api_errors`` consecutive ones while polling).
    """
    from kubernetes.client.exceptions import ApiException

    try:
        kind = JOB_KINDS[manifest["kind"]]
    except KeyError:
        raise ValueError(f"kind {manifest.get('kind')!r}: expected one of {sorted(JOB_KINDS)}") from None
    api = api or custom_objects_api()
    name, namespace = manifest["metadata"]["name"], manifest["metadata"].get("namespace", "default")
    where = f"{manifest['kind']} {namespace}/{name}"
    path = (kind.group, kind.version, namespace, kind.plural)
    try:
        api.create_namespaced_custom_object(*path, manifest)
        logger.info("created %s", where)
    except ApiException as exc:
        if exc.status != 409:
            raise RuntimeError(f"cannot create {where}: HTTP {exc.status} {exc.reason}: {_body(exc)}") from None
        logger.info("%s exists (a retried step): waiting for it", where)

    deadline = time.monotonic() + timeout_s
    start_deadline = None if start_timeout_s is None else time.monotonic() + start_timeout_s
    errors = 0
    with _sigterm_raises():
        try:
            while True:
                try:
                    obj = api.get_namespaced_custom_object(*path, name)
                    errors = 0
                except ApiException as exc:
                    if exc.status == 404:
                        raise RuntimeError(f"{where} disappeared while running (deleted outside the pipeline?)") from None
                    errors += 1
                    if errors >= max_api_errors:
                        raise RuntimeError(f"polling {where}: HTTP {exc.status} {exc.reason} "
                                           f"{errors} times in a row: {_body(exc)}") from None
                    obj = {}
                outcome, message = job_outcome(obj, kind)
                if outcome == "succeeded":
                    logger.info("%s succeeded: %s", where, message)
                    return obj
                if outcome == "failed":
                    raise JobFailed(f"{where} failed: {message or 'no reason given'}")
                if start_deadline is not None and obj and kind.started(obj.get("status") or {}):
                    start_deadline = None
                if start_deadline is not None and time.monotonic() >= start_deadline:
                    _delete(api, path, name, where)
                    raise JobTimeout(f"{where} had not started within {start_timeout_s:g} s (pods pending: GPUs, "
                                     f"quota or image?); deleted it. Last status: {_last_words(obj)}")
                if time.monotonic() >= deadline:
                    _delete(api, path, name, where)
                    raise JobTimeout(f"{where} did not finish within {timeout_s:g} s; deleted it")
                next_check = deadline if start_deadline is None else min(deadline, start_deadline)
                time.sleep(min(poll_s, max(0.0, next_check - time.monotonic())))
        except JobCancelled:
            _delete(api, path, name, where)
            raise JobCancelled(f"{where}: the step was cancelled; deleted the job") from None


def _last_words(obj: dict[str, Any]) -> str:
    """What the operator last said about a job: its conditions' reasons and messages."""
    said = [f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip(": ")
            for c in (obj.get("status") or {}).get("conditions") or []]
    return "; ".join(said) or "no conditions reported"


def check_trainer_crd(crd: dict[str, Any]) -> None:
    """Refuse a TrainJob CRD (as the cluster serves it) whose schema our manifests do not fit.

    Why the schema, not a version label: what matters is whether the API
    server keeps ``spec.runtimePatches``; it prunes unknown fields silently.
    """
    versions = {v.get("name"): v for v in (crd.get("spec") or {}).get("versions") or []}
    served = versions.get(TRAINJOB_VERSION)
    if served is None:
        raise ValueError(f"the cluster's TrainJob CRD serves {sorted(versions)}, "
                         f"not trainer.kubeflow.org/{TRAINJOB_VERSION}; "
                         f"bettersynth supports {SUPPORTED_TRAINER}")
    spec = served["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    if "runtimePatches" not in spec:
        found = "podTemplateOverrides (Trainer before v2.2)" if "podTemplateOverrides" in spec else "neither placement field"
        raise ValueError(f"the cluster's Kubeflow Trainer has {found}, not spec.runtimePatches: the job pods would "
                         f"lose their node pool, volumes and Secrets. bettersynth supports {SUPPORTED_TRAINER}; "
                         "upgrade Trainer, or use multinode.kind: pytorchjob")


def check_trainer_release(api: Any = None) -> None:
    """Refuse a cluster whose Kubeflow Trainer our TrainJobs do not fit (see ``check_trainer_crd``).

    Reads the TrainJob CRD the API server serves; needs ``get`` on
    customresourcedefinitions (a ClusterRole: see README "On a cluster").
    """
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    try:
        crd = api.api_client.call_api(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", "GET",
            {"name": "trainjobs.trainer.kubeflow.org"}, response_type="object", auth_settings=["BearerToken"],
            _return_http_data_only=True)
    except ApiException as exc:
        if exc.status == 404:
            raise RuntimeError(f"Kubeflow Trainer is not installed (no TrainJob CRD); bettersynth supports "
                               f"{SUPPORTED_TRAINER}, or set multinode.kind: pytorchjob") from None
        raise RuntimeError(f"cannot read the TrainJob CRD: HTTP {exc.status} {exc.reason}: {_body(exc)}") from None
    check_trainer_crd(crd)


def check_runtime_installed(name: str, api: Any = None) -> None:
    """Refuse to submit a TrainJob whose ClusterTrainingRuntime is missing (it would wait, never start)."""
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    try:
        api.get_cluster_custom_object("trainer.kubeflow.org", TRAINJOB_VERSION, "clustertrainingruntimes", name)
    except ApiException as exc:
        if exc.status == 404:
            raise RuntimeError(f"ClusterTrainingRuntime {name!r} is not installed: apply k8s/runtimes/ "
                               "(`kubectl apply -k k8s/runtimes`), or print it with `bettersynth trainjob`") from None
        raise RuntimeError(f"cannot read ClusterTrainingRuntime {name!r}: HTTP {exc.status} {exc.reason}: "
                           f"{_body(exc)}") from None


def delete_job(manifest: dict[str, Any], api: Any = None) -> None:
    """Delete the job ``manifest`` names (its pods go with it); a job already gone is fine."""
    kind = JOB_KINDS[manifest["kind"]]
    name, namespace = manifest["metadata"]["name"], manifest["metadata"].get("namespace", "default")
    _delete(api or custom_objects_api(), (kind.group, kind.version, namespace, kind.plural), name,
            f"{manifest['kind']} {namespace}/{name}")


def current_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (its service account's), else ``default`` outside a cluster."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or default
    except OSError:
        return default


def _delete(api: Any, path: tuple[str, ...], name: str, where: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(*path, name, propagation_policy="Foreground")
        logger.info("deleted %s", where)
    except ApiException as exc:
        if exc.status != 404:
            logger.error("could not delete %s: HTTP %s %s", where, exc.status, exc.reason)


def _body(exc: Any) -> str:
    return (exc.body or "")[:500] if isinstance(exc.body, str) else str(exc.body)[:500]


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (KFP's cancel) into ``JobCancelled`` while waiting, so the job gets deleted."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        raise JobCancelled("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
