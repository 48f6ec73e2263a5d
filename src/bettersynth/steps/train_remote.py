"""Run a train step's stages as a multi-node job and bring the results back into the step.

Why: a step pod holds one node; past that the cluster's training operator must
run the stages (``TrainJob`` or ``PyTorchJob``, N nodes x G GPUs). The step
stays the owner of everything else: it puts the inputs where every pod sees
them (the shared PVC), submits and waits (``train.launch``), then copies the
trained model or the paused checkpoint into its own output artifact and logs
the per-step metrics the pods did not already log live, so a remote step's
artifacts and MLflow records match a local one's. The pods run
``python -m bettersynth.train.worker`` under ``torchrun``: the same
``train_stage`` as a local step.

Layout on the shared PVC (``multinode.shared_mount``)::

    bettersynth/inputs/<fingerprint>-<name>/   inputs copied from the step pod (dataset artifact, models)
    bettersynth/jobs/<job>/spec.json           what the worker runs (+ records-*.json, metrics-*.jsonl, result-*.json)
    bettersynth/jobs/<job>/<stage>/model|checkpoints

The job name is derived from the inputs: a retried step finds and waits for
its job instead of starting another one. After a success the job and its
folder are deleted (``keep_workdir`` keeps them); after a failure both stay,
for the pods' logs and a resume.

Example (what ``steps.train`` does with a ``multinode:`` plan)::

    run_stages = RemoteRunner(plan, plan_path, "align-s0", dataset_hash)
    [result] = run_stages([StageCall("align", base, records, dataset_dir, config, out / "model", out / "ckpt")])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import mlflow

from bettersynth.platform.placement import load_profile
from bettersynth.platform.trainjob import (
    KIND_NAMES,
    MANIFESTS,
    MultiNodeJob,
    PvcVolume,
    placement_fields,
    runtime_manifest,
    torchrun_command,
)
from bettersynth.steps.train_plan import StageCall, TrainPlan
from bettersynth.train.checkpoint import latest_checkpoint
from bettersynth.train.launch import (
    JobFailed,
    check_runtime_installed,
    check_trainer_release,
    current_namespace,
    delete_job,
    submit_and_wait,
)
from bettersynth.train.trainer import TrainResult
from bettersynth.train.worker import SPEC_FILE, StageRun, WorkerSpec, write_atomic

logger = logging.getLogger(__name__)

WORKER_MODULE = "bettersynth.train.worker"
LOCAL_TRACKING_SCHEMES = ("sqlite", "file", "")  # stores only the step's own pod can reach ("": a plain path)


class RemoteRunner:
    """Train ``StageCall``s as one multi-node job (see the module docstring)."""

    def __init__(self, plan: TrainPlan, plan_path: Path, label: str, dataset_hash: str, api: Any = None,
                 profile: Path | None = None) -> None:
        if plan.multinode is None:
            raise ValueError("multinode: the plan has no multinode section")
        self.plan, self.settings, self.api = plan, plan.multinode, api
        self.plan_path, self.label, self.dataset_hash = Path(plan_path), label, dataset_hash
        self.shared = Path(self.settings.shared_mount)
        self.fields = self._placement(profile)

    # -- the job ---------------------------------------------------------------
    def job_name(self, calls: list[StageCall]) -> str:
        """``bs-<label>-<digest>``: the same inputs give the same name (a retried step adopts its job)."""
        key = json.dumps({"plan": self.plan_path.read_text(encoding="utf-8"), "label": self.label,
                          "dataset": self.dataset_hash,
                          "stages": [[c.name, str(c.model_dir), str(c.image_root), len(c.records)] for c in calls]})
        return f"bs-{self.label}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def job(self, name: str, env: dict[str, str]) -> MultiNodeJob:
        s = self.settings
        spec = str(self.shared / "bettersynth" / "jobs" / name / SPEC_FILE)
        volumes = [PvcVolume(claim=s.shared_pvc, mount_path=s.shared_mount)]
        volumes += [v for v in self.fields.get("volumes", []) if v not in volumes]
        image = s.image or self.fields.get("image") or os.environ.get("BETTERSYNTH_IMAGE")
        if not image:
            raise ValueError("multinode.image: not set, the cluster profile names no image for the train step, "
                             "and $BETTERSYNTH_IMAGE is unset")
        return MultiNodeJob(**self.fields | {
            "name": name, "namespace": s.namespace or current_namespace(), "image": image,
            "command": torchrun_command(KIND_NAMES[s.kind], s.num_nodes, s.gpus_per_node, ["-m", WORKER_MODULE, spec]),
            "num_nodes": s.num_nodes, "gpus_per_node": s.gpus_per_node, "cpu": s.cpu, "memory": s.memory,
            "env": self.fields.get("env", {}) | env | s.env, "runtime": s.runtime, "backoff_limit": s.backoff_limit,
            "volumes": volumes, "active_deadline_s": int(s.timeout_s),
        })

    def manifest(self, calls: list[StageCall], env: dict[str, str] | None = None) -> dict[str, Any]:
        """The job for ``calls``; every stage's global batch is checked against N x G before anything is copied."""
        job = self.job(self.job_name(calls), env or {})
        build = MANIFESTS[self.settings.kind]
        manifests = [build(job, c.config) for c in calls]  # raises naming the stage that cannot be met
        return manifests[-1]

    # -- a run -------------------------------------------------------------------
    def runtime(self) -> dict[str, Any] | None:
        """The ClusterTrainingRuntime a TrainJob refers to (None for a PyTorchJob); k8s/runtimes/ ships it."""
        return runtime_manifest(self.settings.runtime) if self.settings.kind == "trainjob" else None

    def __call__(self, calls: list[StageCall]) -> list[TrainResult]:
        self._check_shared_mount()
        manifest = self.manifest(calls, mlflow_env())
        if manifest["kind"] == "TrainJob":  # before anything is copied: a job the cluster would mangle or ignore
            check_trainer_release(self.api)
            check_runtime_installed(self.settings.runtime, self.api)
        workdir = self.shared / "bettersynth" / "jobs" / manifest["metadata"]["name"]
        spec = self.write_spec(calls, workdir)
        s = self.settings
        logger.info("training %s as %s %s/%s (%d nodes x %d GPUs)", [c.name for c in calls], manifest["kind"],
                    manifest["metadata"]["namespace"], manifest["metadata"]["name"], s.num_nodes, s.gpus_per_node)
        if mlflow.active_run() is not None:
            mlflow.set_tags({"multinode.job": f"{manifest['kind']}/{manifest['metadata']['name']}",
                             "multinode.workdir": str(workdir)})
        try:
            submit_and_wait(manifest, self.api, timeout_s=s.timeout_s, poll_s=s.poll_s, start_timeout_s=s.start_timeout_s)
        except JobFailed as exc:
            try:
                self._replay(calls, spec)  # the curve up to the failure, in MLflow
            except Exception as replay_error:  # noqa: BLE001 - the job's failure is the error to report
                logger.warning("could not log the failed job's metrics: %s", replay_error)
            raise JobFailed(f"{exc}. The pods' logs have the details; {workdir} keeps the checkpoints. Delete the "
                            f"job before retrying with the same inputs (a retry waits for the existing job).") from None
        results = self.collect(calls, spec)
        if not s.keep_workdir:
            delete_job(manifest, self.api)
            shutil.rmtree(workdir, ignore_errors=True)
        return results

    def write_spec(self, calls: list[StageCall], workdir: Path) -> WorkerSpec:
        """Put every input where the pods see it and write the worker's ``spec.json``."""
        workdir.mkdir(parents=True, exist_ok=True)
        produced: dict[Path, str] = {}  # a stage's out_dir -> its path in the job (a later stage starts from it)
        stages = []
        for c in calls:
            stage_dir = workdir / c.name
            records = workdir / f"records-{c.name}.json"
            write_atomic(records, json.dumps(c.records))  # a retried step may rewrite it while pods start
            checkpoints = stage_dir / "checkpoints"
            if latest_checkpoint(checkpoints) is None and latest_checkpoint(c.checkpoint_dir) is not None:
                shutil.copytree(c.checkpoint_dir, checkpoints, dirs_exist_ok=True)  # e.g. the decision checkpoint
            model_dir = produced.get(Path(c.model_dir)) or str(self.visible(Path(c.model_dir)))
            stages.append(StageRun(name=c.name, model_dir=model_dir, records=str(records),
                                   image_root=str(self.visible(Path(c.image_root))), config=c.config,
                                   out_dir=str(stage_dir / "model"), checkpoint_dir=str(checkpoints),
                                   stop_after_step=c.stop_after_step))
            produced[Path(c.out_dir)] = str(stage_dir / "model")
        spec = WorkerSpec(workdir=str(workdir), stages=stages, deepspeed=self.plan.deepspeed)
        write_atomic(workdir / SPEC_FILE, spec.model_dump_json(indent=2))
        return spec

    def collect(self, calls: list[StageCall], spec: WorkerSpec) -> list[TrainResult]:
        """Results as ``train_stage`` would return them, with the outputs copied where the step wanted them."""
        self._replay(calls, spec)
        consumed = {Path(c.model_dir) for c in calls}
        results = []
        for call, stage in zip(calls, spec.stages):
            path = spec.result_path(call.name)
            if not path.is_file():
                raise RuntimeError(f"the job succeeded but left no {path}: was its folder on the PVC removed?")
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("world_size", None)
            result = TrainResult(**data | {"out_dir": Path(call.out_dir)})
            if not result.completed:  # paused: the checkpoint is the output
                shutil.copytree(stage.checkpoint_dir, call.checkpoint_dir, dirs_exist_ok=True)
            elif Path(call.out_dir) not in consumed:  # an intermediate model stays on the PVC
                shutil.copytree(stage.out_dir, call.out_dir, dirs_exist_ok=True)
            results.append(result)
        return results

    def _replay(self, calls: list[StageCall], spec: WorkerSpec) -> None:
        """Feed each stage's step rows to its call: all into the curve, into MLflow those the pods did not log."""
        for call in calls:
            for row in read_metrics(spec.metrics_path(call.name)):
                logged = row.pop("logged", False)
                step = int(row.pop("step"))
                call.record(step, row, log=not logged)
            call.flush()

    # -- inputs ------------------------------------------------------------------
    def mounts(self) -> list[str]:
        """Folders the job's pods mount at the same path as this pod."""
        return [self.settings.shared_mount] + [v.mount_path for v in self.fields.get("volumes", [])]

    def visible(self, path: Path) -> Path:
        """``path`` as the pods see it: as is under a shared mount, else a copy on the shared PVC."""
        resolved = path.resolve()
        if any(resolved.is_relative_to(Path(m).resolve()) for m in self.mounts()):
            return resolved
        return stage_copy(resolved, self.shared / "bettersynth" / "inputs")

    def _placement(self, profile: Path | None) -> dict[str, Any]:
        if profile is None and not self.settings.profile:
            return {}
        profile_path = Path(profile or self.settings.profile)
        if profile is None and not profile_path.is_absolute():
            profile_path = self.plan_path.parent / profile_path
        return placement_fields(load_profile(profile_path), self.settings.profile_step, self.settings.pool)

    def _check_shared_mount(self) -> None:
        s = self.settings
        if not self.shared.is_dir():
            raise ValueError(f"multinode.shared_mount: {s.shared_mount} is not mounted in this pod; mount PVC "
                             f"{s.shared_pvc!r} there in the train step (cluster profile `volumes`)")


def review_objects(plan_path: Path, profile: Path | None = None, stage: str = "align", seed: int = 0,
                   namespace: str | None = None, dataset_hash: str = "review") -> list[dict[str, Any]]:
    """The objects a train step with this plan submits for ``stage`` (the job, then its runtime), for review.

    The same builder as the step's, so ``kubectl apply`` of these is what the
    pipeline would run; only the job name differs (a run's name digests its inputs).
    """
    plan = TrainPlan.load(plan_path)
    runner = RemoteRunner(plan, plan_path, f"{stage}-s{seed}", dataset_hash, profile=profile)
    if namespace:
        runner.settings = runner.settings.model_copy(update={"namespace": namespace})
    job = runner.job(runner.job_name([]), {})
    objects = [MANIFESTS[runner.settings.kind](job, plan.stage(stage, seed))]
    runtime = runner.runtime()
    return objects + ([runtime] if runtime else [])


def mlflow_env() -> dict[str, str]:
    """The environment that lets the pods log into this step's MLflow run, when they can reach its store."""
    uri = mlflow.get_tracking_uri()
    run = mlflow.active_run()
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if run is None or scheme in LOCAL_TRACKING_SCHEMES:
        return {}  # a local store: the step logs the pods' metrics itself after the job
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": run.info.experiment_id, "MLFLOW_RUN_ID": run.info.run_id}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The worker's step rows, one per step (a resumed job repeats steps after its checkpoint: the last wins)."""
    if not path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["step"])] = row
    return [rows[step] for step in sorted(rows)]


def stage_copy(source: Path, root: Path) -> Path:
    """A copy of ``source`` under ``root``, named by its content's fingerprint; made once, atomically.

    Concurrent steps (parallel seeds) may copy the same input: each copies to a
    private folder and renames it into place; the loser discards its copy.
    """
    target = root / f"{fingerprint(source)}-{source.name}"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    if source.is_dir():
        shutil.copytree(source, tmp)
    else:
        shutil.copy2(source, tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another step got there first
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return target


def fingerprint(path: Path) -> str:
    """A cheap content key: relative names, sizes and modification times of every file under ``path``."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256(str(path).encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]

