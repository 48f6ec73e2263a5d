import pytest

from bettersynth.core.sample import Sample, SampleError, caption_text
from bettersynth.data.llava import (
    LlavaRecordError,
    dj_to_llava,
    llava_questions,
    llava_to_dj,
    read_llava_json,
    write_llava_json,
)

CHAT = {
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
    ],
}
CAPTION = {
    "id": "GCC_7",
    "image": "gcc/7.jpg",
    "conversations": [
        {"from": "human", "value": "Give a brief description of the image.\n<image>"},
        {"from": "gpt", "value": "a red bus on a street"},
    ],
}


def test_conversation_round_trip_keeps_id_image_and_turns():
    sample = llava_to_dj(CHAT)
    assert sample.id == CHAT["id"] and sample.images == [CHAT["image"]]
    # Data-Juicer's llava_to_dj keeps LLaVA's <image> where the record had it
    assert sample.text.startswith("[[human]]: <image>\nWhat are") and sample.text.endswith(" <|__dj__eoc|>")
    Sample.from_json(sample.to_json())  # a valid Data-Juicer sample (image tokens match images)
    assert dj_to_llava(sample) == CHAT


def test_caption_sample_becomes_a_plain_record():
    sample = Sample(id="7", text=caption_text("a red bus on a street"), images=["imgs/7.jpg"])
    assert dj_to_llava(sample) == {
        "id": "7",
        "image": "imgs/7.jpg",
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red bus on a street"}],
    }


def test_caption_round_trip_restores_the_original_question():
    sample = llava_to_dj(CAPTION, only_keep_caption=True)
    assert sample.text == "<image>\na red bus on a street <|__dj__eoc|>"
    assert dj_to_llava(sample, questions=llava_questions([CAPTION])) == CAPTION
    assert dj_to_llava(sample)["conversations"][0]["value"] == "<image>"  # the plain pretraining template
    with pytest.raises(SampleError, match="'GCC_7'.*no original question"):
        dj_to_llava(sample, questions={})


def test_paths_are_made_relative_to_the_root(tmp_path):
    sample = Sample(id="a", text=caption_text("x"), images=[str(tmp_path / "imgs" / "a.jpg")])
    assert dj_to_llava(sample, image_root=tmp_path)["image"] == "imgs/a.jpg"
    assert dj_to_llava(sample)["image"] == sample.images[0]  # as Data-Juicer's dj_to_llava: kept as written
    with pytest.raises(SampleError, match="outside"):
        dj_to_llava(sample, image_root=tmp_path / "elsewhere")


def test_unusable_inputs_name_the_id(tmp_path):
    two_images = Sample(id="two", text=caption_text("x", 2), images=["a.jpg", "b.jpg"])
    with pytest.raises(SampleError, match="'two'"):
        dj_to_llava(two_images)
    bad = dict(CAPTION, conversations=[{"from": "gpt", "value": "x"}, {"from": "human", "value": "<image>"}])
    with pytest.raises(LlavaRecordError, match="'GCC_7'.*first human turn"):
        llava_to_dj(bad)
    path = tmp_path / "d.json"
    assert write_llava_json(path, [CHAT, CAPTION]) == 2
    assert read_llava_json(path) == [CHAT, CAPTION]
