"""The sharded-eval pipeline: GPU shards in a bounded ParallelFor, and a local run equal to the library's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bettersynth.platform.pipeline_loader import load_pipeline_module
from bettersynth.platform.placement import load_profile

PROFILE = "k8s/profiles/generic.yaml"


def _compile(tmp_path: Path, num_shards: int, parallelism: int | None):
    from kfp import compiler

    pipeline = load_pipeline_module("sharded_eval").build_pipeline(load_profile(PROFILE).for_local_run(), num_shards, parallelism)
    out = tmp_path / "sharded_eval.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    return list(yaml.safe_load_all(out.read_text()))


def test_eval_sharded_pipeline_ir(tmp_path: Path) -> None:
    pipeline_spec, platform_spec = _compile(tmp_path, num_shards=6, parallelism=3)
    loop = next(task for task in pipeline_spec["root"]["dag"]["tasks"].values() if "parameterIterator" in task)
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == list(range(6))
    executors = pipeline_spec["deploymentSpec"]["executors"]
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    shard = executors["exec-evaluate-model"]["container"]
    assert shard["resources"]["accelerator"] == {"count": "1", "resourceCount": "1", "resourceType": "nvidia.com/gpu",
                                                 "type": "nvidia.com/gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["exec-evaluate-model"]["tolerations"]
    assert "accelerator" not in executors["exec-merge-eval"]["container"].get("resources", {})
    assert "tolerations" not in k8s.get("exec-merge-eval", {})
    body = pipeline_spec["components"]["comp-for-loop-2"]["dag"]["tasks"]["evaluate-model"]["inputs"]["parameters"]
    assert body["num_shards"]["runtimeValue"]["constant"] == 6
    assert body["shard_index"]["componentInputParameter"].startswith("pipelinechannel--loop-item")


def test_eval_sharded_pipeline_arguments(tmp_path: Path) -> None:
    (pipeline_spec, _) = _compile(tmp_path, num_shards=2, parallelism=None)
    loop = next(task for task in pipeline_spec["root"]["dag"]["tasks"].values() if "parameterIterator" in task)
    assert loop["iteratorPolicy"]["parallelismLimit"] == 2
    with pytest.raises(ValueError, match="num_shards: must be >= 1"):
        load_pipeline_module("sharded_eval").build_pipeline(load_profile(PROFILE), 0)


@pytest.mark.slow  # ~2-3 min: every kfp.local task is a fresh Python importing torch and mlflow
def test_eval_sharded_pipeline_runs_locally(tmp_path: Path, small_world, pico_models, mlflow_store) -> None:
    from kfp import local

    from bettersynth.eval import evaluate
    from bettersynth.steps.evaluate import load_benchmarks

    model_dir = pico_models / "llava-base"
    root = tmp_path / "local_outputs"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline = load_pipeline_module("sharded_eval").build_pipeline(load_profile(PROFILE).for_local_run(), num_shards=2)
    pipeline(model_dir=str(model_dir), textvqa_dir=str(small_world.textvqa.folder),
             mmbench_tsv=str(small_world.mmbench_tsv), label="tiny", batch_size=4, max_new_tokens=4)
    merged = [p for p in root.rglob("predictions") if p.parent.name == "merge-eval"]
    assert len(merged) == 1
    benchmarks = load_benchmarks(small_world.textvqa.folder, small_world.mmbench_tsv)
    for name, benchmark in benchmarks.items():
        whole = evaluate(model_dir, benchmark, batch_size=2, max_new_tokens=4)  # the library, unsharded
        got = json.loads((merged[0] / name / "metrics.json").read_text())
        assert got == json.loads(json.dumps(whole.metrics))
        lines = (merged[0] / name / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == whole.records
    assert (merged[0] / "mmbench" / "submission.xlsx").is_file()
    shards = [p for p in root.rglob("shard.json")]
    assert sorted(json.loads(p.read_text())["shard_index"] for p in shards) == [0, 1]
