"""The outage policy for MLflow: bounded HTTP retries, a fast reachability check, and one error type.

Why: MLflow's client retries 7 times with backoff up to 2 minutes, then
raises an ``MlflowException`` carrying a urllib3 traceback: a quickstart
pointed at a server that is down spent 254 s that way. Every entry point
(``bettersynth`` verbs, the quickstart, the proxy) and every step applies
the same bound, derived from ``$BETTERSYNTH_OUTAGE_BUDGET_S``, and turns an
MLflow call that ran out of retries into ``ServiceUnavailable``.

Example::

    with outage_policy(kept="the workspace ./ws", resume="rerun `bettersynth quickstart`"):
        require_tracking_server()
        mlflow.get_experiment_by_name("x")   # down: ServiceUnavailable within the budget
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from bettersynth.core.retry import DEFAULT_BACKOFF, Backoff, ServiceUnavailable, outage_budget, with_retries

SERVICE = "MLflow tracking server"
HTTP_RETRIES = 2  # MLflow client retries per request after the first try (it waits 0 s, then ~2 s)


def mlflow_http_settings(budget_s: float | None = None) -> dict[str, str]:
    """MLflow client settings whose worst case (every try timing out) stays near ``budget_s``."""
    budget_s = outage_budget() if budget_s is None else budget_s
    tries = HTTP_RETRIES + 1
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(HTTP_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(budget_s // tries))),  # MLflow reads an int
    }


STEP_HTTP_SETTINGS = mlflow_http_settings()  # what a step gets with the default budget (for reference)
# The slowest rate at which a healthy proxying server is assumed to store an uploaded file.
SLOWEST_STORE_BYTES_PER_S = 20 << 20
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"


def upload_timeout(largest_file_bytes: int, timeout_s: int) -> int:
    """The read timeout for artifact PUTs: ``timeout_s`` plus the time to store the largest file at
    ``SLOWEST_STORE_BYTES_PER_S``.

    Why: a server run with ``--serve-artifacts`` (k8s/base/mlflow.yaml) answers a PUT only once it
    has written the file to S3, so the client's wait for that answer grows with the file; the
    budget's share alone (10 s of the default 30 s) would fail a healthy 2 GiB checkpoint.
    """
    return timeout_s + largest_file_bytes // SLOWEST_STORE_BYTES_PER_S


def log_artifact_folder(folder: Path, artifact_path: str) -> None:
    """``mlflow.log_artifacts`` of ``folder`` to the active run, with ``upload_timeout`` for its largest file."""
    largest = max((f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()), default=0)
    before = os.environ.get(TIMEOUT_ENV)
    os.environ[TIMEOUT_ENV] = str(upload_timeout(largest, int(before or mlflow_http_settings()[TIMEOUT_ENV])))
    try:
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
    finally:
        if before is None:
            os.environ.pop(TIMEOUT_ENV, None)
        else:
            os.environ[TIMEOUT_ENV] = before


@contextlib.contextmanager
def bounded_http_retries() -> Iterator[None]:
    """Apply ``mlflow_http_settings()`` (those the environment does not set) for the block."""
    added = {k: v for k, v in mlflow_http_settings().items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def require_tracking_server(uri: str | None = None, backoff: Backoff = DEFAULT_BACKOFF) -> None:
    """Fail fast, naming the URL, when the tracking *server* does not answer (a few tries with backoff).

    A local store (sqlite, files) needs no check. Any HTTP answer counts as
    reachable: authentication and the like are MLflow's to report.
    """
    uri = uri or mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    timeout = max(1.0, min(5.0, outage_budget() / (backoff.attempts + 1)))

    def ping() -> None:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # the server answered

    with_retries(ping, SERVICE, uri, retry_on=(OSError,), backoff=backoff)


def as_service_unavailable(exc: BaseException, uri: str | None = None) -> ServiceUnavailable | None:
    """``exc`` as ``ServiceUnavailable`` when it is MLflow giving up on an unreachable or failing server."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if not isinstance(exc, MlflowException) or not _gave_up(exc):
        return None
    uri = uri or mlflow.get_tracking_uri()
    cause = exc.__cause__ or exc.__context__ or exc
    return ServiceUnavailable(SERVICE, uri, HTTP_RETRIES + 1, None, cause)


def _gave_up(exc: BaseException) -> bool:
    """Whether MLflow's HTTP layer raised ``exc`` after its retries: a connection error, a timeout,
    or too many 5xx/429 answers (found in its cause chain)."""
    import requests

    seen = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        link = link.__cause__ or link.__context__
    return False


@contextlib.contextmanager
def outage_policy(kept: str = "", resume: str = "") -> Iterator[None]:
    """Bound MLflow's retries for the block and raise every outage in it as ``ServiceUnavailable``,
    completed with ``kept`` and ``resume`` where the error did not say them."""
    with bounded_http_retries():
        try:
            yield
        except Exception as exc:
            unavailable = as_service_unavailable(exc)
            if unavailable is None:
                raise
            unavailable.explain(kept, resume)
            if unavailable is exc:
                raise
            raise unavailable from exc
