"""End to end on a pico LLaVA: batched greedy generation feeds the benchmark scores."""

import json
from pathlib import Path

import pytest
import torch

from bettersynth.eval import MMBench, TextVQA, evaluate, extract_choice, generate_answers
from bettersynth.vlm.inputs import format_prompt

models = pytest.importorskip("bettersynth_demo.models")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    texts = ["what colour is the circle", "red blue green yellow", "reference ocr token",
             "answer with the option's letter from the given choices directly",
             "answer the question using a single word or phrase"] * 4
    return models.build_tiny_llava(tmp_path_factory.mktemp("llava"), texts)


def test_eval_generate_uses_chat_template(llava_dir: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(llava_dir)
    assert format_prompt(processor, "Q?") == "USER: <image>\nQ?\nASSISTANT: "
    processor.chat_template = None
    assert format_prompt(processor, "Q?") == "<image>\nQ?"


def test_eval_generate_batching_is_invisible(llava_dir: Path, mmbench_tsv: Path) -> None:
    items = MMBench(mmbench_tsv).items()  # prompts of different lengths: left padding matters
    one = generate_answers(llava_dir, items, batch_size=1, max_new_tokens=5, device="cpu")
    many = generate_answers(llava_dir, items, batch_size=4, max_new_tokens=5, device="cpu")
    assert list(one) == [item.question_id for item in items]
    assert one == many
    assert all(text == text.strip() for text in one.values())


def test_eval_textvqa_scores_come_from_outputs(llava_dir: Path, textvqa_files) -> None:
    questions, annotations, image_dir = textvqa_files
    outputs = generate_answers(llava_dir, TextVQA(questions, annotations, image_dir).items(),
                               batch_size=2, max_new_tokens=4)
    # Make the model's own outputs the ground truth: 3 of 10, 10 of 10, and 0 of 10.
    payload = json.loads(annotations.read_text())
    payload["data"][0]["answers"] = [outputs["34602"]] * 3 + [f"zz{k}" for k in range(7)]
    payload["data"][1]["answers"] = [outputs["34603"]] * 10
    payload["data"][2]["answers"] = [f"zz{k}" for k in range(10)]
    annotations.write_text(json.dumps(payload))
    result = evaluate(llava_dir, TextVQA(questions, annotations, image_dir), batch_size=3, max_new_tokens=4)
    assert {r["question_id"]: r["output"] for r in result.records} == outputs
    assert [r["score"] for r in result.records] == pytest.approx([0.9, 1.0, 0.0])
    assert result.metrics["textvqa_accuracy"] == pytest.approx(100 * 1.9 / 3)


def test_eval_mmbench_scores_come_from_outputs(llava_dir: Path, mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv, limit=2)
    result = evaluate(llava_dir, bench, batch_size=3, max_new_tokens=3)
    rows = {str(row.index): row for row in bench.rows}
    for record in result.records:
        row = rows[record["question_id"]]
        assert record["answer"] == extract_choice(record["output"], row.options)
        assert record["score"] == float(record["answer"] == row.answer)
    groups = {}
    for record in result.records:
        groups.setdefault(record["group"], []).append(record["score"] == 1.0)
    expected = 100 * sum(all(g) for g in groups.values()) / len(groups)
    assert result.metrics["mmbench_circular"] == pytest.approx(expected)


@pytest.mark.gpu
def test_eval_generate_cuda_matches_cpu(llava_dir: Path, mmbench_tsv: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    items = MMBench(mmbench_tsv).items()
    cpu = generate_answers(llava_dir, items, batch_size=4, max_new_tokens=5, device="cpu")
    assert generate_answers(llava_dir, items, batch_size=4, max_new_tokens=5, device="cuda") == cpu
