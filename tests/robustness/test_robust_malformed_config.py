"""A malformed recipe, eval file or training YAML fails before any work, naming the file, the line and the field."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from bettersynth.core.yaml_lines import load_model
from bettersynth.eval.mmbench import MMBench
from bettersynth.eval.textvqa import TextVQA
from bettersynth.recipes.recipe import Recipe
from bettersynth.steps.process import process_dataset

GOOD_RECIPE = """\
name: t
process:
  - words_num_filter:
      min_num: 1
  - image_text_similarity_filter:
      hf_clip: clip
      min_score: 0.2
"""


def _error(call, *args) -> str:
    with pytest.raises(ValueError) as err:
        call(*args)
    return str(err.value)


def _assert_names(message: str, path: Path, line: int, *fields: str) -> None:
    assert f"{path}:{line}:" in message or (str(path) in message and f"(line {line})" in message), message
    for field in fields:
        assert field in message, (field, message)


@pytest.mark.parametrize("old, new, line, fields", [
    ("min_score: 0.2", "min_scor: 0.2", 7, ["process[1]", "'min_scor'", "did you mean 'min_score'"]),
    ("min_score: 0.2", "min_score: high", 7, ["process[1]", "field 'min_score'", "number"]),
    ("min_num: 1", "min_num: [1]", 4, ["process[0]", "field 'min_num'"]),
    ("  - words_num_filter:", "  - words_num_filtr:", 3, ["process[0]", "did you mean 'words_num_filter'"]),
    ("      hf_clip: clip", "      hf_clip: clip\n      trust_remote_code: true", 7, ["process[1]", "trust_remote_code"]),
    ("name: t", "name: t\nnp: 4\nimage_key: image", 3, ["image_key='image'"]),
    ("name: t", "name: t\nprocss: []", 2, ["unknown top-level key 'procss'"]),
    ("      min_score: 0.2", "      min_score: 0.2\n      min_score: 0.3", 8, ["'min_score' is given twice (lines 7 and 8)"]),
    ("min_score: 0.2", "min_score: [0.2", 7, ["not valid YAML"]),  # unclosed: where it opened
    ("      min_num: 1", "\tmin_num: 1", 4, ["not valid YAML"]),
])
def test_robust_malformed_recipe_names_file_line_and_field(tmp_path, old, new, line, fields):
    path = tmp_path / "recipe.yaml"
    assert old in GOOD_RECIPE
    path.write_text(GOOD_RECIPE.replace(old, new))
    _assert_names(_error(Recipe.load, path), path, line, *fields)


def test_robust_recipe_accepts_trust_remote_code_false_only():
    """Data-Juicer recipes often say ``trust_remote_code: false``: accepted (it is what we do anyway)."""
    recipe = Recipe.from_dict({"process": [{"image_captioning_mapper": {"hf_img2seq": "m", "trust_remote_code": False}}]})
    assert "trust_remote_code" not in recipe.ops[0].config.model_dump()
    with pytest.raises(ValueError, match="trust_remote_code=True is not supported"):
        Recipe.from_dict({"process": [{"image_captioning_mapper": {"hf_img2seq": "m", "trust_remote_code": True}}]})


def test_robust_malformed_recipe_lists_every_problem_in_file_order(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("rounds:\n  - name: a\n    process:\n      - words_num_filter: {min_num: x}\n"
                    "  - name: b\n    where: {stat: num_words, fractoin: 0.5}\n    process: [no_such_op]\n")
    message = _error(Recipe.load, path)
    assert message.startswith(f"{path}: 3 problems:")
    lines = message.splitlines()[1:]
    assert lines[0].startswith(f"  - {path}:4: rounds[0].process[0]") and "'min_num'" in lines[0]
    assert lines[1].startswith(f"  - {path}:6: rounds[1].where: field 'fractoin'")
    assert lines[2].startswith(f"  - {path}:7: rounds[1].process[0]") and "no_such_op" in lines[2]


def test_robust_recipe_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(GOOD_RECIPE.encode().replace(b"name: t", b"name: t\xff"))
    _assert_names(_error(Recipe.load, path), path, 1, "not UTF-8")


def test_robust_malformed_recipe_fails_the_step_before_any_work(small_world, tmp_path, mlflow_store):
    path = tmp_path / "recipe.yaml"
    path.write_text(GOOD_RECIPE.replace("min_num: 1", "min_num: many"))
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    message = _error(process_dataset, "filter", small_world.seed_jsonl.parent, path, tmp_path / "out", tmp_path)
    _assert_names(message, path, 4, "field 'min_num'")
    assert not (tmp_path / "out").exists() and len(mlflow.search_runs(search_all_experiments=True)) == runs_before


# ---- eval files: every row is checked when the benchmark is built, before a model is loaded


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _mmbench(path: Path, rows: list[dict]) -> Path:
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    path.write_text("\n".join(["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]) + "\n")
    return path


def _mmb_row(index: int, **changes) -> dict:
    return {"index": index, "question": f"q{index}?", "A": "yes", "B": "no", "answer": "A", "category": "c",
            "l2-category": "l2", "image": _png(), **changes}


@pytest.mark.parametrize("bad, line, fields", [
    ({"answer": "E"}, 4, ["row 3", "field 'answer'"]),
    ({"index": "three"}, 4, ["row 3", "field 'index'"]),
    ({"B": ""}, 4, ["row 3", "fields 'A' and 'B'"]),
    ({"image": base64.b64encode(b"not an image").decode()}, 4, ["row 3", "field 'image'", "not a readable image"]),
    ({"question": ""}, 4, ["row 3", "field 'question'"]),
])
def test_robust_malformed_mmbench_row_names_file_line_and_field(tmp_path, bad, line, fields):
    rows = [_mmb_row(0), _mmb_row(1), {**_mmb_row(2), **bad}, _mmb_row(3)]
    path = _mmbench(tmp_path / "mmbench_dev.tsv", rows)
    _assert_names(_error(MMBench, path), path, line, *fields)


def test_robust_mmbench_row_after_a_multiline_cell_names_its_own_line(tmp_path):
    rows = [_mmb_row(0, question='"two\nlines"'), _mmb_row(1, answer="Z")]
    path = _mmbench(tmp_path / "m.tsv", rows)
    _assert_names(_error(MMBench, path), path, 4, "row 2", "field 'answer'")


def test_robust_mmbench_not_utf8_names_the_line(tmp_path):
    path = _mmbench(tmp_path / "m.tsv", [_mmb_row(0), _mmb_row(1)])
    path.write_bytes(path.read_bytes().replace(b"q1?", b"q1\xfe"))
    _assert_names(_error(MMBench, path), path, 3, "not UTF-8")


def _textvqa(tmp_path: Path, questions: list, annotations: dict) -> tuple[Path, Path, Path]:
    images = tmp_path / "train_images"
    images.mkdir(exist_ok=True)
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(images / f"{name}.jpg")
    q = tmp_path / "llava_textvqa_val_v051_ocr.jsonl"
    q.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in questions) + "\n")
    a = tmp_path / "TextVQA_0.5.1_val.json"
    a.write_text(json.dumps(annotations, indent=1))
    return q, a, images


SUFFIX = "\nAnswer the question using a single word or phrase."


def _question(image: str) -> dict:
    return {"question_id": image, "image": f"{image}.jpg", "text": f"what is in {image}?{SUFFIX}"}


def _annotation(image: str, **changes) -> dict:
    return {"question_id": hash(image) % 1000, "image_id": image, "question": f"what is in {image}?", "answers": ["x"] * 10, **changes}


@pytest.mark.parametrize("line2, fields", [
    ("{not json", ["not JSON"]),
    ({"question_id": "b", "image": "b.jpg"}, ["missing field 'text'"]),
    ({"question_id": "b", "image": 7, "text": "q"}, ["field 'image'"]),
    ({"question_id": "b", "image": "../b.jpg", "text": f"what is in b?{SUFFIX}"}, ["field 'image'", ".."]),
    ({"question_id": "b", "image": "missing/b.jpg", "text": f"what is in b?{SUFFIX}"}, ["field 'image'", "not a file"]),
])
def test_robust_malformed_textvqa_question_names_file_line_and_field(tmp_path, line2, fields):
    q, a, images = _textvqa(tmp_path, [_question("a"), line2], {"data": [_annotation("a"), _annotation("b")]})
    _assert_names(_error(TextVQA, q, a, images), q, 2, *fields)


@pytest.mark.parametrize("change, fields", [
    ({"answers": ["x"] * 9}, ["data[1]", "field 'answers'"]),
    ({"image_id": 5}, ["data[1]", "field 'image_id'"]),
])
def test_robust_malformed_textvqa_annotation_names_file_line_and_field(tmp_path, change, fields):
    annotations = {"data": [_annotation("a"), _annotation("b", **change)]}
    q, a, images = _textvqa(tmp_path, [_question("a"), _question("b")], annotations)
    line = a.read_text().splitlines().index("  {", 3) + 1  # where data[1] starts in the indented file
    _assert_names(_error(TextVQA, q, a, images), a, line, *fields)


def test_robust_textvqa_annotations_not_json_names_the_line(tmp_path):
    q, a, images = _textvqa(tmp_path, [_question("a")], {"data": [_annotation("a")]})
    a.write_text(a.read_text().replace('"answers"', "answers", 1))
    line = next(i for i, text in enumerate(a.read_text().splitlines(), start=1) if text.strip().startswith("answers"))
    _assert_names(_error(TextVQA, q, a, images), a, line, "not JSON")


# ---- training YAML, through the same loader


def test_robust_malformed_train_yaml_names_file_line_and_field(tmp_path):
    from bettersynth.steps.train_plan import TrainPlan

    path = tmp_path / "train.yaml"
    path.write_text("align:\n  lr: 0.001\nsample_cap: lots\ndeepspeed:\n  offload_optimzer: true\n")
    message = _error(load_model, path, TrainPlan)
    _assert_names(message, path, 3, "field 'sample_cap'")
    _assert_names(message, path, 5, "field 'deepspeed.offload_optimzer'")
    path.write_text("sample_cap: 100\n")
    assert load_model(path, TrainPlan).sample_cap == 100


def test_robust_train_yaml_stage_typo_fails_on_load_naming_stage_and_key(tmp_path):
    from bettersynth.steps.train_plan import TrainPlan

    path = tmp_path / "train.yaml"
    path.write_text("sample_cap: 100\nfinetune:\n  learning_rat: 0.001\n")
    message = _error(TrainPlan.load, path)
    _assert_names(message, path, 2, "field 'finetune'")
    assert "learning_rat" in message
