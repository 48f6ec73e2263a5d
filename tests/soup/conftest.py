"""Pico checkpoints for the soup tests, built offline from configs once per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

TINY_LLAMA = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=True,
)


def _save_llama(path: Path, seed: int, dtype: torch.dtype = torch.float32, max_shard_size: str | None = None,
                **overrides: object) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).to(dtype)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def llamas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny tied-embedding Llamas: fp32 seeds 0-2 (single file), seed 1 sharded, bf16 pair, odd shape."""
    root = tmp_path_factory.mktemp("llamas")
    made = {f"fp32_{seed}": _save_llama(root / f"fp32_{seed}", seed) for seed in range(3)}
    made["sharded_1"] = _save_llama(root / "sharded_1", 1, max_shard_size="8KB")
    made["sharded_2"] = _save_llama(root / "sharded_2", 2, max_shard_size="8KB")
    made["bf16_0"] = _save_llama(root / "bf16_0", 10, torch.bfloat16)
    made["bf16_1"] = _save_llama(root / "bf16_1", 11, torch.bfloat16)
    made["wide"] = _save_llama(root / "wide", 3, intermediate_size=48)
    first = made["fp32_0"]
    (first / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    (first / "chat_template.jinja").write_text("{{ messages }}")
    (first / "optimizer.pt").write_bytes(b"not a weight file we should copy")
    return made


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, loaded directly with safetensors (independent of bettersynth)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture(scope="session")
def load_state() -> Callable[[Path], dict[str, torch.Tensor]]:
    return state_dict


@pytest.fixture
def handmade(tmp_path: Path) -> Callable[..., Path]:
    """Write a raw safetensors checkpoint: ``handmade("a", {"w": tensor, ...})``."""

    def make(name: str, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
        path = tmp_path / name
        path.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors", metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(config or {"name": name}))
        return path

    return make


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its schema created once (creating one costs seconds, copying one doesn't)."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    mlflow.search_experiments()
    mlflow.set_tracking_uri(previous)
    return path


@pytest.fixture
def mlflow_store(_empty_mlflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh real MLflow store for one test: sqlite tracking + registry, file artifacts under tmp_path."""
    import shutil

    import mlflow
    from mlflow import MlflowClient

    from bettersynth.tracking.runs import PARENT_RUN_ENV

    db = tmp_path / "mlflow.db"
    shutil.copy(_empty_mlflow_db, db)
    uri = f"sqlite:///{db}"
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", PARENT_RUN_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("soup-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    try:
        yield MlflowClient(uri)
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def logged_checkpoint(mlflow_store) -> Callable[[Path], str]:
    """Log a checkpoint directory as a run's ``checkpoint`` artifact, as the train step does; returns the run id."""
    import mlflow

    def log(path: Path) -> str:
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(path), artifact_path="checkpoint")
        return run.info.run_id

    return log
