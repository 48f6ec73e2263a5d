"""Dataset variants versioned with DVC: add, push, and restore by content hash.

Why: a model is only traceable if the exact bytes it was trained on can be
named (the DVC directory hash) and brought back on any machine from the remote.

Example::

    version = version_variant(Path("."), Path("out/filtered"), "sim-0.28", lineage={...})
    restore_variant(Path("."), version.dataset_hash)   # after a clean clone
    checkout(Path("."), "sim-0.28")                    # or a hash, or an MLflow run id

The remote is whatever ``.dvc/config`` names; ``BETTERSYNTH_DVC_REMOTE``
(e.g. ``s3://team-data/dvc``) and ``BETTERSYNTH_DVC_ENDPOINT_URL`` (an
S3-compatible server such as MinIO) set it by configuration. Credentials are
never written: DVC reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
from the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bettersynth.core.retry import Backoff, outage_budget, with_retries
from bettersynth.core.stalled_s3 import watch_s3

log = logging.getLogger(__name__)

VARIANTS_DIR = Path("data") / "variants"
DEFAULT_REMOTE = "local"
DEFAULT_REMOTE_DIR = ".dvc-remote"
REMOTE_ENV = "BETTERSYNTH_DVC_REMOTE"  # remote URL to use instead of the project's (s3://..., a directory)
ENDPOINT_ENV = "BETTERSYNTH_DVC_ENDPOINT_URL"  # endpoint of an S3-compatible server (MinIO, Ceph, ...)
DVC_HASH = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
DVC_BACKOFF = Backoff(attempts=2, first_delay=1.0)  # the S3 client already retries inside each attempt
# An S3 remote's client waits at most this share of the outage budget for a connect or a read (5 s of
# 30), and botocore does not retry beneath s3fs's own five tries: with botocore's defaults (60 s reads,
# retried) one push to an endpoint that accepted and never answered took 425 s.
S3_WAIT_SHARE = 1 / 6
S3_ATTEMPTS_ENV = "AWS_MAX_ATTEMPTS"


@dataclass(frozen=True)
class VariantVersion:
    name: str
    path: Path  # the variant's directory inside the DVC project
    dataset_hash: str  # DVC's directory hash, e.g. "3f2a...c1.dir"
    pointer: Path  # the .dvc file that names those bytes
    remote_url: str


def open_repo(root: Path):
    from dvc.repo import Repo

    return Repo(str(root))


def ensure_dvc_project(root: Path, remote_url: str | None = None, endpoint_url: str | None = None,
                       create_remote: bool = True) -> str:
    """Make ``root`` a DVC project with a default remote; returns the remote's URL.

    A git work tree gets a normal DVC project; any other directory gets
    ``--no-scm`` (e.g. a scratch workspace or a pod's volume). The remote is
    ``remote_url``, else ``$BETTERSYNTH_DVC_REMOTE``, else the one configured,
    else a local directory remote under ``root``, created unless ``create_remote``
    is false (a restore reads a remote; an empty new one would hide a wrong path).
    """
    from dvc.repo import Repo

    remote_url = remote_url or os.environ.get(REMOTE_ENV) or None
    endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
    repo = open_repo(root)
    with repo.config.edit() as config:
        config.setdefault("core", {})["analytics"] = False  # air-gapped: never phone home
        remotes = config.setdefault("remote", {})
        if remote_url is not None or not remotes:
            # DVC reads a relative path against the working directory and stores it relative
            # to .dvc/, so the project stays movable and no machine path is written
            remotes[DEFAULT_REMOTE] = {"url": remote_url or os.path.relpath(root / DEFAULT_REMOTE_DIR)}
            if endpoint_url:
                remotes[DEFAULT_REMOTE]["endpointurl"] = endpoint_url
            config.setdefault("core", {})["remote"] = DEFAULT_REMOTE
    name = repo.config["core"].get("remote", DEFAULT_REMOTE)
    url = repo.config["remote"][name]["url"]
    if "://" not in url and create_remote:
        Path(url).mkdir(parents=True, exist_ok=True)
    return url


class RemoteMissing(LookupError):
    """The project's local-directory DVC remote cannot hold the variant: absent, empty, or another one."""


def check_local_remote(root: Path, dataset_hash: str, known_remote: str | None = None) -> None:
    """Before a pull: fail in one sentence, with the command that fixes it, when the cache lacks
    ``dataset_hash`` and the default remote is a local directory that does not hold it.

    Why: a second clone reads the remote its ``.dvc/config`` names, often a folder
    of the first machine; DVC's own answer is a checkout error about the cache.
    ``known_remote`` (the URL the variant was pushed to, from MLflow) goes into the
    suggested command. Remote URLs with a scheme (s3://...) are left to the pull.
    """
    repo = open_repo(root)
    md5 = dataset_hash if dataset_hash.endswith(".dir") else dataset_hash + ".dir"
    if repo.cache.local.exists(md5):
        return
    name = repo.config["core"].get("remote", DEFAULT_REMOTE)
    url = repo.config["remote"][name]["url"]
    if "://" in url:
        return
    path = Path(url)
    if not path.is_dir():
        state = "does not exist"
    elif not any(path.iterdir()):
        state = "is empty"
    elif not repo.cloud.get_remote_odb(name).exists(md5):
        state = f"does not hold {md5}"
    else:
        return
    target = known_remote if known_remote and Path(known_remote).resolve() != path.resolve() else "<url of the remote that holds it>"
    raise RemoteMissing(f"DVC remote {name!r} at {path} {state}; point this project at the remote that holds "
                        f"{md5}: dvc remote modify --local {name} url {target}")


def version_variant(
    root: Path, source: Path, name: str, lineage: dict[str, Any] | None = None, leave_out: Sequence[str] = ()
) -> VariantVersion:
    """Copy ``source`` to ``data/variants/<name>`` in the DVC project, ``dvc add`` and push it.

    ``lineage`` (parent hash, recipe hash, op counts) is stored in the pointer's
    ``meta``, so ``bettersynth data log`` can show where each variant came from.
    ``leave_out`` names files of ``source`` that are a step's bookkeeping, not
    data (a record naming its MLflow run): left out, identical data hashes the same.
    """
    root = Path(root).resolve()
    remote_url = ensure_dvc_project(root)
    target = root / VARIANTS_DIR / name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*leave_out) if leave_out else None)
    repo = open_repo(root)
    repo.add(str(target))
    pointer = target.with_name(target.name + ".dvc")
    document = yaml.safe_load(pointer.read_text())
    if lineage:
        document["meta"] = lineage
        pointer.write_text(yaml.safe_dump(document, sort_keys=False))
    transfer(repo, "push", [pointer], describe_remote(root))
    return VariantVersion(name, target, document["outs"][0]["md5"], pointer, remote_url)


def describe_remote(root: Path) -> str:
    """The URL of the project's default remote (with its endpoint, for S3-compatible servers)."""
    config = open_repo(root).config
    remote = config["remote"][config["core"].get("remote", DEFAULT_REMOTE)]
    return f"{remote['url']} (endpoint {remote['endpointurl']})" if remote.get("endpointurl") else remote["url"]


def transfer(repo, direction: str, pointers: Sequence[Path], url: str, backoff: Backoff = DVC_BACKOFF) -> int:
    """``dvc push``/``pull`` of ``pointers`` under the outage budget; an unreachable remote fails naming its URL.

    Any error is retried: a transfer fails through DVC, fsspec or botocore
    exceptions alike, and the final message carries the original one. Nothing
    local is removed on failure: the variant, its pointer and the DVC cache
    stay, and the same call succeeds once the remote is back. An S3 endpoint
    that hangs mid-transfer is given up on at its first timeout (``watch_s3``);
    each attempt probes it afresh.
    """
    repo = bounded_remote(repo)
    targets = [str(p) for p in pointers]
    move = (lambda: repo.push(targets=targets)) if direction == "push" else (lambda: repo.pull(targets=targets, force=True))
    with bounded_s3_attempts(), watch_s3() as watch:

        def attempt() -> int:
            watch.reset()
            return move()

        return with_retries(attempt, f"DVC remote ({direction})", url, retry_on=(Exception,), backoff=backoff)


def bounded_remote(repo):
    """``repo`` opened again with its S3 remote's connect and read timeouts cut to ``S3_WAIT_SHARE`` of
    the outage budget, where ``.dvc/config`` sets none; other remotes: ``repo`` itself."""
    from dvc.repo import Repo

    name = repo.config["core"].get("remote", DEFAULT_REMOTE)
    remote = repo.config["remote"].get(name, {})
    if not str(remote.get("url", "")).startswith("s3://"):
        return repo
    wait = max(1, round(outage_budget() * S3_WAIT_SHARE))  # DVC's schema takes whole seconds for some remotes
    timeouts = {key: wait for key in ("connect_timeout", "read_timeout") if key not in remote}
    return Repo(repo.root_dir, remote_config=timeouts) if timeouts else repo


@contextlib.contextmanager
def bounded_s3_attempts() -> Iterator[None]:
    """One botocore attempt per s3fs try for the block, unless ``$AWS_MAX_ATTEMPTS`` says otherwise."""
    if S3_ATTEMPTS_ENV in os.environ:
        yield
        return
    os.environ[S3_ATTEMPTS_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(S3_ATTEMPTS_ENV, None)


def pointer_hash(pointer: Path) -> str:
    """The dataset hash a ``.dvc`` pointer file names."""
    return yaml.safe_load(Path(pointer).read_text())["outs"][0]["md5"]


def find_pointer(root: Path, dataset_hash: str) -> Path | None:
    """The .dvc file under ``data/variants`` that names ``dataset_hash``, if any."""
    for pointer in sorted((Path(root) / VARIANTS_DIR).glob("*.dvc")):
        if pointer_hash(pointer) in (dataset_hash, dataset_hash + ".dir"):
            return pointer
    return None


def restore_variant(root: Path, dataset_hash: str, name: str | None = None, known_remote: str | None = None) -> Path:
    """Bring back the exact bytes of ``dataset_hash`` from the DVC remote and verify them.

    Uses an existing pointer when the project has one; otherwise writes one
    (``data/variants/<name or hash>.dvc``), as after a clean clone that only
    knows the hash from MLflow. A local remote that cannot hold the bytes fails
    first, naming the fix (``check_local_remote``).
    """
    root = Path(root).resolve()
    ensure_dvc_project(root, create_remote=False)
    check_local_remote(root, dataset_hash, known_remote)
    pointer = find_pointer(root, dataset_hash)
    if pointer is None:
        md5 = dataset_hash if dataset_hash.endswith(".dir") else dataset_hash + ".dir"
        stem = name or md5.removesuffix(".dir")[:12]
        pointer = root / VARIANTS_DIR / f"{stem}.dvc"
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": stem, "hash": "md5"}]}))
    repo = open_repo(root)
    transfer(repo, "pull", [pointer], describe_remote(root))
    document = yaml.safe_load(pointer.read_text())
    path = pointer.with_suffix("")
    actual = directory_hash(root, path)
    expected = document["outs"][0]["md5"]
    if actual != expected:
        raise ValueError(f"{path}: restored bytes hash to {actual}, expected {expected}")
    return path


def directory_hash(root: Path, path: Path) -> str:
    """DVC's own hash of a directory (``<md5>.dir``), recomputed from the files on disk."""
    from dvc_data.hashfile.build import build

    repo = open_repo(root)
    _, _, obj = build(repo.cache.local, str(path), repo.fs, "md5", dry_run=True)
    return obj.hash_info.value


def list_variants(root: Path, folder: str = VARIANTS_DIR) -> list[dict[str, Any]]:
    """Every variant pointer under ``folder`` (copied variants by default) with its hash and lineage ``meta``."""
    rows = []
    for pointer in sorted((Path(root) / folder).glob("*.dvc")):
        document = yaml.safe_load(pointer.read_text())
        rows.append({"name": pointer.stem, "dataset_hash": document["outs"][0]["md5"], "meta": document.get("meta", {})})
    return rows


@dataclass(frozen=True)
class Resolved:
    """What a checkout reference names: the hash, a folder name, and a pointer to start from."""

    dataset_hash: str
    name: str | None  # folder under data/variants, when known
    pointer_text: str | None  # a .dvc file's text (from an MLflow artifact), when known
    how: str  # "variant", "hash" or "mlflow run"
    remote_url: str | None = None  # the remote the variant was pushed to, when MLflow recorded it


def _variant_pointer(root: Path, name: str) -> Path | None:
    pointer = Path(root) / VARIANTS_DIR / f"{name}.dvc"
    return pointer if pointer.is_file() else None


def resolve_reference(root: Path, reference: str) -> Resolved:
    """Read ``reference`` as a variant name, a DVC hash, or an MLflow run id, in that order.

    A bare 32-hex string is both a DVC md5 and an MLflow run id: it is a
    hash if a pointer names it, else a run if the tracking server knows one,
    else a hash.
    """
    pointer = _variant_pointer(root, reference)
    if pointer is not None:
        return Resolved(pointer_hash(pointer), reference, None, "variant")
    if reference.endswith(".dir") and DVC_HASH.match(reference):
        return Resolved(reference, None, None, "hash")
    if DVC_HASH.match(reference) and find_pointer(root, reference) is not None:
        return Resolved(reference, None, None, "hash")
    run = _find_run(reference)
    if run is not None:
        return _resolve_run(run)
    if DVC_HASH.match(reference):
        return Resolved(reference, None, None, "hash")
    raise ValueError(
        f"{reference!r}: not a variant under {VARIANTS_DIR}, a DVC hash (<md5>.dir) or an MLflow run id "
        f"known to the tracking server {_tracking_uri()}"
    )


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _find_run(run_id: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not re.fullmatch(r"[0-9a-zA-Z-]{8,64}", run_id):
        return None
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        return None


def _run_pointer(client, run_id: str) -> str | None:
    """The text of the run's ``dvc/*.dvc`` artifact (the version step logs it), if any."""
    from mlflow.artifacts import download_artifacts

    pointers = [a.path for a in client.list_artifacts(run_id, "dvc") if a.path.endswith(".dvc")]
    if not pointers:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        return Path(download_artifacts(run_id=run_id, artifact_path=pointers[0], dst_path=scratch)).read_text()


def _resolve_run(run) -> Resolved:
    """A run's dataset: its pointer artifact, else its ``dataset.hash`` tag or DVC dataset input;
    a pipeline's parent run answers through its version-dataset child."""
    from mlflow import MlflowClient

    from bettersynth.tracking.runs import dvc_dataset_inputs

    client = MlflowClient()
    candidates = [run]
    if not run.data.tags.get("dataset.hash"):
        children = client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=1000
        )
        candidates += sorted((c for c in children if c.data.tags.get("dataset.hash")), key=lambda c: c.info.start_time)
    for candidate in candidates:  # a pointer first: it brings the lineage meta along
        text = _run_pointer(client, candidate.info.run_id)
        if text is not None:
            document = yaml.safe_load(text)
            return Resolved(document["outs"][0]["md5"], Path(document["outs"][0]["path"]).name, text, "mlflow run",
                            candidate.data.tags.get("dvc.remote"))
    for candidate in candidates:
        tags, inputs = candidate.data.tags, dvc_dataset_inputs(candidate)
        remote = tags.get("dvc.remote") or (inputs[0]["remote_url"] if inputs else None)
        if tags.get("dataset.hash"):
            return Resolved(tags["dataset.hash"], tags.get("dataset.variant"), None, "mlflow run", remote)
        if inputs:
            return Resolved(inputs[0]["dataset_hash"], inputs[0]["name"], None, "mlflow run", remote)
    raise ValueError(f"MLflow run {run.info.run_id}: no dataset recorded (no dvc/*.dvc artifact, dataset.hash tag or DVC dataset input)")


def checkout(root: Path, reference: str, name: str | None = None) -> tuple[Path, Resolved]:
    """Restore the bytes ``reference`` names (variant, hash or MLflow run id) and verify them.

    Starting from a run's pointer artifact, the pointer is written into
    ``data/variants`` first, so the lineage ``meta`` comes back with the bytes
    (the path for pods that could not commit the pointer to git).
    """
    root = Path(root).resolve()
    resolved = resolve_reference(root, reference)
    if resolved.pointer_text is not None and find_pointer(root, resolved.dataset_hash) is None:
        target = root / VARIANTS_DIR / f"{name or resolved.name}.dvc"
        if target.exists():
            raise ValueError(f"{target}: exists and names {pointer_hash(target)}, not {resolved.dataset_hash}; pass --name")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(resolved.pointer_text)
    log.info("%s %r resolves to %s", resolved.how, reference, resolved.dataset_hash)
    return restore_variant(root, resolved.dataset_hash, name or resolved.name, resolved.remote_url), resolved


def cache_objects(root: Path) -> list[Path]:
    """The file objects in the project's DVC cache (directory manifests excluded)."""
    from dvc.repo import Repo

    cache = Path(Repo(str(root)).cache.local.path)
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".dir"))
