"""The evaluate step on the demo sets: shards merge to the unsharded files and MLflow record."""

import csv
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bettersynth.steps.evaluate import evaluate_model, merge_shards

K = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_world, pico_models, mlflow_store):
    out = tmp_path_factory.mktemp("eval")
    args = (pico_models / "llava-base", small_world.textvqa.folder, small_world.mmbench_tsv)
    whole = evaluate_model(*args, out / "whole", "tiny", batch_size=4, max_new_tokens=4)
    for i in range(K):
        evaluate_model(*args, out / f"shard{i}", "tiny", batch_size=3, max_new_tokens=4,
                       shard_index=i, num_shards=K)
    merged = merge_shards([out / f"shard{i}" for i in reversed(range(K))], *args[1:], out / "merged")
    return out, whole, merged


def _xlsx(path: Path) -> list[tuple]:
    from openpyxl import load_workbook

    return list(load_workbook(path).active.iter_rows(values_only=True))


def test_eval_steps_sharded_equals_unsharded(runs) -> None:
    out, whole, merged = runs
    assert merged["metrics"] == whole["metrics"]
    assert whole["metrics"]["textvqa_questions"] == 6 and whole["metrics"]["mmbench_questions"] > 4
    for name in ("textvqa", "mmbench"):
        for file in sorted(p.name for p in (out / "whole" / name).iterdir()):
            if file.endswith(".xlsx"):
                assert _xlsx(out / "merged" / name / file) == _xlsx(out / "whole" / name / file)
            else:
                assert (out / "merged" / name / file).read_bytes() == (out / "whole" / name / file).read_bytes(), file
    assert (out / "whole" / "mmbench" / "submission.xlsx").is_file()


def test_eval_steps_shards_keep_circular_groups_whole(runs) -> None:
    out, _, _ = runs
    owner = {}
    for i in range(K):
        info = json.loads((out / f"shard{i}" / "shard.json").read_text())
        assert (info["shard_index"], info["num_shards"]) == (i, K)
        for line in (out / f"shard{i}" / "mmbench" / "predictions.jsonl").read_text().splitlines():
            assert owner.setdefault(json.loads(line)["group"], i) == i


def test_eval_steps_records_explain_the_score(runs) -> None:
    out, whole, _ = runs
    records = [json.loads(line) for line in (out / "whole" / "textvqa" / "predictions.jsonl").read_text().splitlines()]
    assert {"question_id", "prompt", "output", "answer", "score", "gt_answers", "ocr_tokens"} <= set(records[0])
    assert all("Reference OCR token: " in r["prompt"] for r in records if r["ocr_tokens"])
    mean = 100 * sum(r["score"] for r in records) / len(records)
    assert whole["metrics"]["textvqa_accuracy"] == pytest.approx(mean)
    with (out / "whole" / "mmbench" / "mmbench_l2_category.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(row["questions"]) for row in rows) == len(
        {json.loads(line)["group"] for line in (out / "whole" / "mmbench" / "predictions.jsonl").read_text().splitlines()})


def test_eval_steps_log_metrics_tables_and_predictions(runs) -> None:
    out, whole, merged = runs
    client = MlflowClient()
    for result in (whole, merged):
        run = client.get_run(result["mlflow_run_id"])
        assert run.data.params["model"] == "tiny"
        assert {k: run.data.metrics[k] for k in result["metrics"]} == pytest.approx(result["metrics"])
        l2 = [k for k in run.data.metrics if k.startswith("mmbench_l2_category/") and k.endswith("/circular")]
        assert l2
        files = {f.path for f in client.list_artifacts(result["mlflow_run_id"], "eval/mmbench")}
        assert {"eval/mmbench/predictions.jsonl", "eval/mmbench/mmbench_category.csv",
                "eval/mmbench/submission.xlsx"} <= files
    assert client.get_run(merged["mlflow_run_id"]).data.params["num_shards"] == str(K)


def test_eval_steps_merge_needs_every_shard(runs, small_world) -> None:
    out, _, _ = runs
    with pytest.raises(ValueError, match=r"shard indices \[0, 2\], expected 0..2"):
        merge_shards([out / "shard0", out / "shard2"], small_world.textvqa.folder, small_world.mmbench_tsv,
                     out / "broken")
    with pytest.raises(ValueError, match="no shard.json"):
        merge_shards([out / "whole"], small_world.textvqa.folder, small_world.mmbench_tsv, out / "broken")


def test_eval_steps_caption_proxy(tmp_path, small_world, pico_models, mlflow_store) -> None:
    from bettersynth.steps.evaluate import caption_proxy

    result = caption_proxy(pico_models / "llava-base", small_world.seed_jsonl, tmp_path, "tiny", batch_size=8)
    lines = [json.loads(line) for line in (tmp_path / "caption_loss.jsonl").read_text().splitlines()]
    assert len(lines) == result["metrics"]["caption_samples"] == 24
    total = sum(r["nll_sum"] for r in lines) / sum(r["tokens"] for r in lines)
    assert result["metrics"]["caption_loss"] == pytest.approx(total)
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.metrics["caption_perplexity"] == pytest.approx(result["metrics"]["caption_perplexity"])
