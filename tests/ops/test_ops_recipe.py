from pathlib import Path

import pytest

from bettersynth.recipes.recipe import Recipe

GOOD = """
project_name: demo
dataset_path: in.jsonl
np: 4
name: clip-032
process:
  - words_num_filter:
      min_num: 5
  - image_text_similarity_filter:
      hf_clip: clip
      min_score: 0.32
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_ops_recipe_loads_and_keeps_dj_keys(tmp_path):
    recipe = Recipe.load(_write(tmp_path, GOOD))
    assert recipe.name == "clip-032"
    assert recipe.extra == {"project_name": "demo", "dataset_path": "in.jsonl", "np": 4}
    assert [op.name for op in recipe.ops] == ["words_num_filter", "image_text_similarity_filter"]
    assert recipe.ops[1].config.min_score == 0.32 and recipe.ops[1].config.reduce_mode == "avg"
    flat = recipe.flat_params()
    assert flat["words_num_filter.min_num"] == 5
    assert flat["image_text_similarity_filter.min_score"] == 0.32
    assert flat["image_text_similarity_filter.any_or_all"] == "any"


def test_ops_recipe_hash_is_stable(tmp_path):
    a = Recipe.load(_write(tmp_path, GOOD))
    reordered = """
name: other-name
process:
  - words_num_filter: {min_num: 5, max_num: %d}
  - image_text_similarity_filter: {min_score: 0.32, hf_clip: clip, reduce_mode: avg}
""" % a.ops[0].config.max_num
    b = Recipe.from_dict(__import__("yaml").safe_load(reordered))
    assert a.hash() == b.hash() and len(a.hash()) == 64
    assert a.hash() == "%s" % Recipe.load(tmp_path / "recipe.yaml").hash()
    changed = Recipe.from_dict({"process": [{"words_num_filter": {"min_num": 6}}, {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": 0.32}}]})
    assert changed.hash() != a.hash()


def test_ops_recipe_repeated_op_flat_params():
    recipe = Recipe.from_dict({"process": [{"words_num_filter": {"min_num": 1}}, {"words_num_filter": {"min_num": 2}}]})
    flat = recipe.flat_params()
    assert flat["words_num_filter.min_num"] == 1 and flat["words_num_filter_2.min_num"] == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("process:\n  - words_num_filtr: {min_num: 5}\n", ["recipe.yaml", "process[0]", "did you mean 'words_num_filter'"]),
        ("process:\n  - words_num_filter: {min_num: 5}\n  - image_text_similarity_filter: {min_scor: 0.3}\n",
         ["process[1]", "image_text_similarity_filter", "'min_scor'", "did you mean 'min_score'"]),
        ("process:\n  - image_text_similarity_filter: {min_score: high}\n", ["process[0]", "'min_score'", "number"]),
        ("process:\n  - image_text_similarity_filter: {reduce_mode: median}\n", ["'reduce_mode'", "avg"]),
        ("process:\n  - image_text_similarity_filter: {min_score: 0.9, max_score: 0.1}\n", ["min_score", "max_score"]),
        ("process:\n  - image_captioning_mapper: {caption_num: 0}\n", ["'caption_num'", "greater than"]),
        ("process: []\n", ["'process'"]),
        ("process:\n  - {words_num_filter: {}, image_text_similarity_filter: {}}\n", ["process[0]", "exactly one"]),
        ("process:\n  - words_num_filter: 5\n", ["process[0]", "mapping"]),
        ("procss:\n  - words_num_filter:\n", ["unknown top-level", "procss"]),
    ],
)
def test_ops_recipe_errors_name_file_op_and_field(tmp_path, text, expected):
    with pytest.raises(ValueError) as err:
        Recipe.load(_write(tmp_path, text))
    message = str(err.value)
    assert str(tmp_path / "recipe.yaml") in message
    for part in expected:
        assert part in message, (part, message)


def test_ops_recipe_op_without_params():
    recipe = Recipe.from_dict({"process": ["words_num_filter", {"words_num_filter": None}]})
    assert recipe.ops[0].config.min_num == 10 and recipe.ops[1].config.min_num == 10


def test_ops_recipe_data_juicer_recipe_as_is():
    recipe = Recipe.from_dict({
        "project_name": "p", "dataset_path": "in.jsonl", "export_path": "out.jsonl", "np": 28, "text_keys": "text",
        "process": [
            {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": 0.32, "mem_required": "1500MB", "accelerator": "cuda", "num_proc": 4}},
            {"image_shape_filter": {"min_width": 100, "batch_size": 1000}},
        ],
    })
    assert recipe.ops[0].config.min_score == 0.32 and recipe.ops[1].config.min_width == 100


def test_ops_recipe_unsupported_options_in_one_error():
    with pytest.raises(ValueError) as err:
        Recipe.from_dict({
            "text_keys": "caption", "image_key": "image",
            "process": [{"words_num_filter": {"text_key": "caption"}}, {"image_txt_similarity_filter": {}}, {"words_num_filter": {"min_nu": 1}}],
        }, source="dj.yaml")
    message = str(err.value)
    assert message.startswith("dj.yaml: 5 problems")
    for part in ["text_keys='caption'", "image_key='image'", "process[0]", "text_key='caption'", "process[1]",
                 "did you mean 'image_text_similarity_filter'", "process[2]", "'min_nu'"]:
        assert part in message, (part, message)
