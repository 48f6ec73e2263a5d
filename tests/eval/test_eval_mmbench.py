"""MMBench: loader and its errors, prompts, choice extraction and CircularEval."""

import base64
import csv
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from bettersynth.eval.mmbench import MMBench, build_prompt, extract_choice, load_mmbench
from tests.eval.eval_data import write_tsv

OPTIONS = {"A": "dog", "B": "cat", "C": "Vitamin C", "D": "hot dog"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("B", "B"), ("B.", "B"), ("(B)", "B"), ("B) cat", "B"), ("The answer is B.", "B"),
        ("I think D", "D"), ("A", "A"), ("Option A", "A"),
        ("C. Vitamin C", "C"),  # the "C" inside the option text is not a second letter
        ("cat", "B"), ("Vitamin C", "C"),
        # VLMEvalKit reads a capital "A" token as the letter, never as an article, and gives
        # no answer when two option texts occur ("dog" inside "hot dog"); see
        # test_eval_mmbench_vlmevalkit.py for the full table.
        ("A cat", "A"), ("hot dog", None),
        ("Based on the image, a dog", "A"),  # "B" of "Based" is not a letter
        ("A and B", None), ("B, C", None), ("A or B", None),  # two letters
        ("a dog and a cat", None),  # two option texts
        ("nothing here", None), ("", None),
        ("E", None),  # not an option letter, and no text
    ],
)
def test_eval_mmbench_extract_choice(output: str, expected: str | None) -> None:
    assert extract_choice(output, OPTIONS) == expected


def test_eval_mmbench_extract_ignores_absent_options() -> None:
    assert extract_choice("C", {"A": "yes", "B": "no"}) is None
    assert extract_choice("No.", {"A": "yes", "B": "no"}) == "B"


def test_eval_mmbench_prompt() -> None:
    assert build_prompt("Q?", {"A": "x", "B": "y"}, hint="H") == (
        "H\nQ?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.")
    assert build_prompt("Q?", {"A": "x", "B": "y"}).startswith("Q?\nA. x")


def test_eval_mmbench_load(mmbench_tsv: Path) -> None:
    rows = load_mmbench(mmbench_tsv)
    assert len(rows) == 4 + 2 + 3
    first, two_option = rows[0], rows[4]
    assert first.options == {"A": "red", "B": "blue", "C": "green", "D": "yellow"} and first.answer == "A"
    assert rows[1].options["A"] == "blue" and rows[1].answer == "D" and rows[1].group == 0
    assert two_option.options == {"A": "yes", "B": "no"} and two_option.hint == "Look at the top."
    bench = MMBench(mmbench_tsv)
    item = bench.items()[4]
    assert isinstance(item.image, Image.Image) and item.image.size == (32, 32)
    assert item.prompt == ("Look at the top.\nIs there a sign?\nA. yes\nB. no\n"
                           "Answer with the option's letter from the given choices directly.")


def _predict(bench: MMBench, wrong: set[int]) -> dict[str, str]:
    """Right letter for every row except the indices in ``wrong``."""
    out = {}
    for row in bench.rows:
        letter = row.answer if row.index not in wrong else next(x for x in row.options if x != row.answer)
        out[str(row.index)] = f"The answer is {letter}."
    return out


def test_eval_mmbench_circular(mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    # group 0 right in 3 of 4 rotations (its base row is right); group 1 all right;
    # group 2 wrong only in its base row.
    result = bench.score(_predict(bench, wrong={2_000_000, 2}))
    assert result.metrics["mmbench_circular"] == pytest.approx(100 / 3)
    # single pass on index <= 1e6 as VLMEvalKit: rows 0, 1, 2 and 1000000, of which row 2 is wrong
    assert result.metrics["mmbench_single"] == pytest.approx(75.0)
    by_category = {row["category"]: row for row in result.tables["mmbench_category"]}
    assert by_category["colour"] == {"category": "colour", "questions": 1, "circular": 0.0, "single": 100.0}
    assert by_category["ocr"]["circular"] == 100.0 and by_category["count"]["single"] == 0.0
    by_l2 = {row["l2_category"]: row for row in result.tables["mmbench_l2_category"]}
    assert by_l2["perception"]["questions"] == 2 and by_l2["perception"]["circular"] == 50.0
    record = next(r for r in result.records if r["question_id"] == "2000000")
    assert record["score"] == 0.0 and record["answer"] != record["gt"] and record["group"] == 0
    everything = bench.score(_predict(bench, wrong=set()))
    assert everything.metrics == {"mmbench_circular": 100.0, "mmbench_single": 100.0}


def test_eval_mmbench_limit_keeps_rotations(mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv, limit=2)
    assert bench.question_ids() == ["0", "1000000", "2000000", "3000000", "1", "1000001"]


def test_eval_mmbench_image_reference_and_nan(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    mmbench_rows[1]["image"] = "0"  # VLMEvalKit stores repeated images as the index of their row
    mmbench_rows[4]["C"] = "nan"
    rows = load_mmbench(write_tsv(tmp_path / "m.tsv", mmbench_rows))
    assert rows[1].image == rows[0].image
    assert list(rows[4].options) == ["A", "B"]


def test_eval_mmbench_test_split_without_answers(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    columns = ["index", "question", "hint", "A", "B", "C", "D", "image"]
    bench = MMBench(write_tsv(tmp_path / "test.tsv", mmbench_rows, columns))
    result = bench.score({q: "A" for q in bench.question_ids()})
    assert result.metrics == {} and result.records[0]["score"] is None


def test_eval_mmbench_fewer_options_allowed(tmp_path: Path, mmbench_rows) -> None:
    mmbench_rows[0].update(D="", answer="A")  # a 3-option row
    mmbench_rows[4].update(C="NaN", D="")
    rows = load_mmbench(write_tsv(tmp_path / "m.tsv", mmbench_rows))
    assert list(rows[0].options) == ["A", "B", "C"] and list(rows[4].options) == ["A", "B"]


@pytest.mark.parametrize(
    ("row", "field", "value", "message"),
    [
        (2, "index", "x1", r"m\.tsv: row 2 \(line 3\): field 'index' is 'x1'"),
        (1, "question", "", r"m\.tsv: row 1 \(line 2\): field 'question' is empty"),
        (1, "C", "", r"row 1 \(line 2\): field 'D' is set but an earlier option is empty"),
        (5, "B", "", r"row 5 \(line 6\): fields 'A' and 'B' must both be set"),
        (5, "answer", "C", r"row 5 \(line 6\): field 'answer' is 'C', not one of \['A', 'B'\]"),
        (6, "image", "!!notbase64!!", r"row 6 \(line 7\): field 'image' is not base64"),
        (6, "image", "77", r"row 6 \(line 7\): field 'image' refers to a row without an image"),
        (4, "index", "0", r"m\.tsv: row 4 \(line 5\): field 'index' repeats 0"),
    ],
)
def test_eval_mmbench_load_errors(tmp_path: Path, mmbench_rows, row: int, field: str, value: str,
                                  message: str) -> None:
    mmbench_rows[row - 1][field] = value
    with pytest.raises(ValueError, match=message):
        load_mmbench(write_tsv(tmp_path / "m.tsv", mmbench_rows))


def test_eval_mmbench_missing_column(tmp_path: Path, mmbench_rows) -> None:
    path = write_tsv(tmp_path / "m.tsv", mmbench_rows, ["index", "question", "A", "B", "answer"])
    with pytest.raises(ValueError, match=r"m\.tsv: header lacks columns \['image'\]"):
        load_mmbench(path)


def test_eval_mmbench_submission(tmp_path: Path, mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    predictions = {q: f"answer {q}" for q in bench.question_ids()}
    path = bench.write_submission(tmp_path / "sub" / "mmbench.tsv", predictions)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == ["index", "question", "A", "B", "C", "D", "prediction", "answer"]
    assert len(rows) == 9 and rows[4]["prediction"] == "answer 1" and rows[4]["C"] == ""
    assert rows[1] | {"prediction": ""} == {"index": "1000000", "question": "What colour is the circle?",
                                            "A": "blue", "B": "green", "C": "yellow", "D": "red",
                                            "prediction": "", "answer": "D"}
    with pytest.raises(ValueError, match="path: suffix '.json'"):
        bench.write_submission(tmp_path / "mmbench.json", predictions)
    with pytest.raises(ValueError, match="predictions: 1 unknown question ids"):
        bench.write_submission(tmp_path / "mmbench.tsv", {"77": "A"})


def test_eval_mmbench_submission_xlsx(tmp_path: Path, mmbench_tsv: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    bench = MMBench(mmbench_tsv)
    predictions = {q: f"answer {q}" for q in bench.question_ids()}
    tsv = bench.write_submission(tmp_path / "mmbench.tsv", predictions)
    xlsx = bench.write_submission(tmp_path / "mmbench.xlsx", predictions)
    sheet = openpyxl.load_workbook(xlsx).active
    cells = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    with tsv.open(newline="") as handle:
        assert cells == list(csv.reader(handle, delimiter="\t"))
    assert sheet.cell(row=2, column=1).value == 0  # the index stays a number, as pandas writes it


def test_eval_mmbench_submission_test_split_has_no_answer_column(tmp_path: Path, mmbench_rows) -> None:
    for row in mmbench_rows:
        row["answer"] = ""
    bench = MMBench(write_tsv(tmp_path / "test.tsv", mmbench_rows))
    path = bench.write_submission(tmp_path / "sub.tsv", {})
    assert path.read_text().splitlines()[0].split("\t") == ["index", "question", "A", "B", "C", "D", "prediction"]


def test_eval_mmbench_large_image_cell(tmp_path: Path, mmbench_rows) -> None:
    noise = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    mmbench_rows[0]["image"] = base64.b64encode(buffer.getvalue()).decode()
    assert len(mmbench_rows[0]["image"]) > 131072  # csv's default field size limit
    rows = load_mmbench(write_tsv(tmp_path / "m.tsv", mmbench_rows))
    assert rows[0].image == buffer.getvalue()


def test_xlsx_submission_drops_control_characters_a_model_may_emit(tmp_path):
    from openpyxl import load_workbook

    from bettersynth.eval.mmbench import _write_xlsx

    path = tmp_path / "submission.xlsx"
    _write_xlsx(path, ["index", "prediction"], [[1, "B\x00\x07 cat\x1b"], [2, ""]])
    rows = list(load_workbook(path).active.iter_rows(values_only=True))
    assert rows == [("index", "prediction"), (1, "B cat"), (2, None)]
