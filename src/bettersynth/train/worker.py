"""One process of a multi-node training job: run the stages its spec names, exactly as the local step does.

Why: the pods of a ``TrainJob``/``PyTorchJob`` must train what a train step
trains in its own pod, so they call the same ``train_stage`` with the same
settings; only where things live differs (everything on the shared PVC). The
spec (JSON, written by ``bettersynth.steps.train_remote``) lists stages run in
order in one process group (stage 2 starts from stage 1's output). Rank 0
appends every step's metrics to ``metrics-<stage>.jsonl`` and, when the job
was handed an MLflow run (``MLFLOW_RUN_ID``), logs them there live; it writes
``result-<stage>.json`` when a stage ends. A restarted job skips the stages
that have a result and resumes the others from their checkpoints.

Example::

    torchrun --nnodes=2 --nproc_per_node=8 -m bettersynth.train.worker /mnt/shared/bettersynth/jobs/<job>/spec.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bettersynth.train.config import StageConfig
from bettersynth.train.deepspeed import DeepSpeedSettings

logger = logging.getLogger(__name__)

SPEC_FILE = "spec.json"


class StageRun(BaseModel):
    """One ``train_stage`` call, with every path on storage all pods share."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str  # metric prefix and output names (align, finetune)
    model_dir: str  # checkpoint to start from (the base model, or the previous stage's out_dir)
    records: str  # LLaVA json list to train on
    image_root: str  # folder the records' image paths are relative to
    config: StageConfig  # the stage's settings (world size: the trainer adopts the job's)
    out_dir: str  # where the trained model is saved
    checkpoint_dir: str  # resumable checkpoints (a restarted pod resumes here)
    stop_after_step: int | None = None  # pause after this step (the early-abort decision point)


class WorkerSpec(BaseModel):
    """What a job trains: stages in order, and where the results go."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workdir: str  # results and metrics land here
    stages: list[StageRun] = Field(min_length=1)
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)

    @classmethod
    def load(cls, path: Path) -> WorkerSpec:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def result_path(self, stage: str) -> Path:
        return Path(self.workdir) / f"result-{stage}.json"

    def metrics_path(self, stage: str) -> Path:
        return Path(self.workdir) / f"metrics-{stage}.jsonl"


class MetricsSink:
    """Rank 0's per-step callback: a line per step on the shared PVC, and MLflow when the job has a run."""

    def __init__(self, path: Path, prefix: str, run_id: str | None) -> None:
        self.path, self.prefix, self.run_id = path, prefix, run_id
        self.client = None
        if run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient()

    def __call__(self, step: int, values: dict[str, float]) -> None:
        logged = self._log(step, values)
        row = {"step": step, **{k: float(v) for k, v in values.items()}, "logged": logged}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")

    def _log(self, step: int, values: dict[str, float]) -> bool:
        """Log live; a tracking hiccup must not kill a days-long job (the step replays unlogged lines)."""
        if self.client is None:
            return False
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[
                Metric(f"{self.prefix}/{k}", float(v), now, step) for k, v in values.items()])
            return True
        except Exception as exc:  # noqa: BLE001 - any tracking failure: keep training, keep the line
            logger.warning("MLflow logging of step %d failed (%s); the step will replay it", step, exc)
            return False


def run(spec: WorkerSpec) -> list[dict[str, Any]]:
    """Train every stage not yet done; returns the results of the stages run here (rank 0's view)."""
    from bettersynth.train.engine import barrier, dist_info
    from bettersynth.train.trainer import train_stage

    info = dist_info()
    run_id = os.environ.get("MLFLOW_RUN_ID") or None
    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    results = []
    for stage in spec.stages:
        if spec.result_path(stage.name).is_file():  # a restarted job: this stage finished (or paused) already
            logger.info("stage %s already has a result; skipping it", stage.name)
            continue
        records = json.loads(Path(stage.records).read_text(encoding="utf-8"))
        sink = MetricsSink(spec.metrics_path(stage.name), stage.name, run_id) if info.is_main else None
        result = train_stage(
            Path(stage.model_dir), records, Path(stage.image_root), stage.config, Path(stage.out_dir),
            on_step=sink, checkpoint_dir=Path(stage.checkpoint_dir), stop_after_step=stage.stop_after_step,
            deepspeed=spec.deepspeed,
        )
        data = asdict(result) | {"out_dir": str(result.out_dir), "world_size": info.world_size}
        if info.is_main:
            write_atomic(spec.result_path(stage.name), json.dumps(data, indent=2))
        barrier(info)
        results.append(data)
    return results


def write_atomic(path: Path, text: str) -> None:
    """Readers on other nodes see the old file or the new one, never half of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bettersynth.train.worker", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help=f"the job's {SPEC_FILE} (on the shared PVC)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(WorkerSpec.load(args.spec))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
