"""TextVQA: leave-one-out accuracy worked by hand, prompts, loaders and their errors."""

import json
from pathlib import Path

import pytest

from bettersynth.eval.textvqa import (
    TextVQA,
    answer_scores,
    build_prompt,
    load_textvqa,
    parse_llava_text,
    vqa_accuracy,
)

OTHER = ["x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10"]


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # k matching answers: leaving out a match (k subsets) leaves k-1, else k; min(1, ./3)
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_eval_textvqa_leave_one_out(matches: int, expected: float) -> None:
    answers = ["red"] * matches + OTHER[: 10 - matches]
    assert vqa_accuracy("red", answers) == pytest.approx(expected)


def test_eval_textvqa_hand_values() -> None:
    assert vqa_accuracy("red", ["red"] * 1 + OTHER[:9]) == pytest.approx(0.3)
    assert vqa_accuracy("red", ["red"] * 2 + OTHER[:8]) == pytest.approx(0.6)
    assert vqa_accuracy("red", ["red"] * 3 + OTHER[:7]) == pytest.approx(0.9)


def test_eval_textvqa_normalises_ground_truth_too() -> None:
    answers = ["Coca-Cola", "coca cola.", "the coca cola"] + OTHER[:7]
    assert vqa_accuracy("COCA COLA", answers) == pytest.approx(0.9)
    assert answer_scores(answers)["coca cola"] == pytest.approx(0.9)
    assert vqa_accuracy("two", ["2"] * 2 + ["two"] * 2 + OTHER[:6]) == 1.0


def test_eval_textvqa_prompt_round_trip() -> None:
    text = "what is written?\nReference OCR token: STOP, 22, a,b\nAnswer the question using a single word or phrase."
    question, tokens = parse_llava_text(text, "f:1")
    assert question == "what is written?" and tokens == ("STOP", "22", "a,b")
    assert build_prompt(question, tokens) == text
    assert build_prompt(question, tokens, use_ocr=False) == (
        "what is written?\nAnswer the question using a single word or phrase.")
    assert parse_llava_text("q?\nAnswer the question using a single word or phrase.", "f:1") == ("q?", ())


def test_eval_textvqa_benchmark(textvqa_files) -> None:
    questions, annotations, image_dir = textvqa_files
    bench = TextVQA(questions, annotations, image_dir)
    items = bench.items()
    assert [i.question_id for i in items] == ["34602", "34603", "34604"]
    assert items[0].image == image_dir / "img0.jpg"
    assert items[0].prompt == ("what is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL\n"
                               "Answer the question using a single word or phrase.")
    assert items[1].prompt == "what does the small white text say?\nAnswer the question using a single word or phrase."
    result = bench.score({"34602": "Dakota", "34603": "copenhagen", "34604": "Two."})
    # 3 of 10 -> 0.9; 1 of 10 -> 0.3; "two" and "2" both normalise to "2": 4 of 10 -> 1.0
    assert [r["score"] for r in result.records] == pytest.approx([0.9, 0.3, 1.0])
    assert result.metrics == {"textvqa_accuracy": pytest.approx(100 * (0.9 + 0.3 + 1.0) / 3)}
    assert result.records[2]["answer"] == "2" and result.records[2]["output"] == "Two."
    no_ocr = TextVQA(questions, annotations, image_dir, use_ocr=False, limit=1).items()
    assert len(no_ocr) == 1 and "Reference OCR token" not in no_ocr[0].prompt


def test_eval_textvqa_repeated_question_pairs_in_order(tmp_path: Path) -> None:
    data = [{"question_id": qid, "image_id": "im", "question": "what?", "answers": [a] * 10}
            for qid, a in ((1, "x"), (2, "y"))]
    (tmp_path / "a.json").write_text(json.dumps({"data": data}))
    line = {"question_id": "im", "image": "im.jpg", "text": "What?\nAnswer the question using a single word or phrase."}
    (tmp_path / "q.jsonl").write_text((json.dumps(line) + "\n") * 2)
    joined = load_textvqa(tmp_path / "q.jsonl", tmp_path / "a.json")
    assert [(q.question_id, q.answers[0]) for q in joined] == [("1", "x"), ("2", "y")]


def _rewrite_jsonl(path: Path, line_no: int, record) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = record if isinstance(record, str) else json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", r"llava_textvqa_val_v051_ocr\.jsonl:2: not JSON"),
        ({"question_id": "img0", "image": "img0.jpg"}, r"llava_textvqa_val_v051_ocr\.jsonl:2: missing field 'text'"),
        ({"question_id": "img0", "image": 5, "text": "q"}, r"jsonl:2: field 'image' has type int"),
        ({"question_id": "img0", "image": "img0.jpg", "text": "q only"}, r"jsonl:2: field 'text' is not"),
        ({"question_id": "img0", "image": "img0.jpg",
          "text": "q?\nOCR: a\nAnswer the question using a single word or phrase."}, r"jsonl:2: field 'text' line 2"),
        ({"question_id": "img9", "image": "img9.jpg",
          "text": "what?\nAnswer the question using a single word or phrase."}, r"jsonl:2: fields 'image'/'text' match no"),
    ],
)
def test_eval_textvqa_question_errors(textvqa_files, record, message: str) -> None:
    questions, annotations, image_dir = textvqa_files
    _rewrite_jsonl(questions, 2, record)
    with pytest.raises(ValueError, match=message):
        TextVQA(questions, annotations, image_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["data"][1].pop("answers"), r"TextVQA_0\.5\.1_val\.json: data\[1\]: missing field 'answers'"),
        (lambda d: d["data"][2].update(answers=["a"] * 9), r"data\[2\]: field 'answers' must be 10 strings"),
        (lambda d: d["data"][0].update(image_id=7), r"data\[0\]: field 'image_id' has type int"),
        (lambda d: d.pop("data"), r"TextVQA_0\.5\.1_val\.json: missing field 'data'"),
    ],
)
def test_eval_textvqa_annotation_errors(textvqa_files, change, message: str) -> None:
    questions, annotations, image_dir = textvqa_files
    payload = json.loads(annotations.read_text())
    change(payload)
    annotations.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=message):
        TextVQA(questions, annotations, image_dir)
