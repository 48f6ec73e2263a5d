"""LLaVA <-> Data-Juicer conversion gives what Data-Juicer's own tools give on the same input.

Expected outputs are derived by hand from the behaviour of Data-Juicer's
``tools/fmt_conversion/multimodal/source_format_to_data_juicer_format/llava_to_dj.py`` and
``.../data_juicer_format_to_target_format/dj_to_llava.py`` with their default arguments:
turns written as ``[[from]]: value``, human and gpt joined by "\\n", rounds by "\\n", then
" <|__dj__eoc|>"; values kept byte for byte; ``str_id`` on; ``<image>`` must open or close the
first human turn of a record with an image; back again, values split at ``[[role]]: ``,
stripped, a trailing end-of-chunk token dropped, and from the second turn an image token at
either end dropped; the id kept as the jsonl has it.
"""

from __future__ import annotations

import json

import pytest

from bettersynth.core.sample import Sample, SampleError
from bettersynth.data.llava import (
    LlavaRecordError,
    dj_file_to_llava,
    dj_to_llava,
    iter_llava_json,
    llava_file_to_dj,
    llava_originals,
    llava_to_dj,
)

EOC = "<|__dj__eoc|>"
BUS = "coco/train2017/000000033471.jpg"


def turns(*values: str, roles=("human", "gpt")) -> list[dict]:
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(values)]


# (case, LLaVA record, llava_to_dj options, expected id, expected text, expected images)
TO_DJ = [
    ("two rounds, the tool's own example",
     {"id": "000000033471", "image": BUS, "conversations": turns(
         "<image>\nWhat are the colors of the bus in the image?", "The bus in the image is white and red.",
         "What feature can be seen on the back of the bus?", "The back of the bus features an advertisement.")},
     {}, "000000033471",
     "[[human]]: <image>\nWhat are the colors of the bus in the image?\n[[gpt]]: The bus in the image is white and red.\n"
     "[[human]]: What feature can be seen on the back of the bus?\n[[gpt]]: The back of the bus features an advertisement. " + EOC,
     [BUS]),
    ("numeric id becomes a string (str_id on)",
     {"id": 42, "image": "a.jpg", "conversations": turns("<image>\nQ?", "A.")}, {}, "42",
     "[[human]]: <image>\nQ?\n[[gpt]]: A. " + EOC, ["a.jpg"]),
    ("numeric id kept with str_id off",
     {"id": 42, "image": "a.jpg", "conversations": turns("<image>\nQ?", "A.")}, {"str_id": False}, 42,
     "[[human]]: <image>\nQ?\n[[gpt]]: A. " + EOC, ["a.jpg"]),
    ("<image> closing the question",
     {"id": "c", "image": "c.jpg", "conversations": turns("Describe this.\n<image>", "a dog")}, {}, "c",
     "[[human]]: Describe this.\n<image>\n[[gpt]]: a dog " + EOC, ["c.jpg"]),
    ("<image> with no newline after it",
     {"id": "n", "image": "n.jpg", "conversations": turns("<image>Describe.", "a cat")}, {}, "n",
     "[[human]]: <image>Describe.\n[[gpt]]: a cat " + EOC, ["n.jpg"]),
    ("whitespace kept byte for byte",
     {"id": "w", "image": "w.jpg", "conversations": turns("<image>\n  Two  spaces ", "a  red   bus ")}, {}, "w",
     "[[human]]: <image>\n  Two  spaces \n[[gpt]]: a  red   bus  " + EOC, ["w.jpg"]),
    ("caption only (pretraining record)",
     {"id": "GCC_7", "image": "gcc/7.jpg", "conversations": turns("Give a brief description of the image.\n<image>", "a red bus")},
     {"only_keep_caption": True}, "GCC_7", "<image>\na red bus " + EOC, ["gcc/7.jpg"]),
    ("caption only, two rounds: the tool writes two tokens for one image",
     {"id": "m", "image": "m.jpg", "conversations": turns("<image>\nQ1", "A1", "Q2", "A2")},
     {"only_keep_caption": True}, "m", "<image>\nA1\n<image>\nA2 " + EOC, ["m.jpg"]),
    ("no image: a text-only sample, everything kept",
     {"id": "t", "conversations": turns("Hi <image> there", "Hello")}, {}, "t",
     "[[human]]: Hi <image> there\n[[gpt]]: Hello " + EOC, []),
    ("empty image path is no image",
     {"id": "e", "image": "", "conversations": turns("Hi", "Hello")}, {}, "e", "[[human]]: Hi\n[[gpt]]: Hello " + EOC, []),
    ("roles written as the record names them",
     {"id": "r", "image": "r.jpg", "conversations": turns("<image>\nQ", "A", roles=("user", "assistant"))}, {}, "r",
     "[[user]]: <image>\nQ\n[[assistant]]: A " + EOC, ["r.jpg"]),
    ("a later <image> is kept where it is",
     {"id": "k", "image": "k.jpg", "conversations": turns("<image>\nQ1", "A1", "<image>\nQ2", "A2")}, {}, "k",
     "[[human]]: <image>\nQ1\n[[gpt]]: A1\n[[human]]: <image>\nQ2\n[[gpt]]: A2 " + EOC, ["k.jpg"]),
    ("no turns at all",
     {"id": "z", "conversations": []}, {}, "z", " " + EOC, []),
]


@pytest.mark.parametrize("case, record, options, sample_id, text, images", TO_DJ, ids=[c[0] for c in TO_DJ])
def test_llava_to_dj_matches_the_tool(case, record, options, sample_id, text, images):
    sample = llava_to_dj(record, **options)
    written = sample.to_json()
    assert (written["id"], written["text"], written["images"]) == (sample_id, text, images)
    assert type(written["id"]) is type(sample_id)


# (case, LLaVA record, options, phrase of the refusal)
TO_DJ_REFUSED = [
    ("<image> in the middle of the first question",
     {"id": "mid", "image": "a.jpg", "conversations": turns("Look at <image> here", "ok")}, {}, "neither at its start nor at its end"),
    ("an image but no <image> in the first question",
     {"id": "none", "image": "a.jpg", "conversations": turns("What is it?", "a cat")}, {}, "neither at its start nor at its end"),
    ("<image> only in the second round",
     {"id": "late", "image": "a.jpg", "conversations": turns("Q1", "A1", "<image>\nQ2", "A2")}, {}, "neither at its start"),
    ("an odd number of turns",
     {"id": "odd", "image": "a.jpg", "conversations": turns("<image>\nQ", "A", "Q2")}, {}, "3 turns"),
    ("no conversations", {"id": "nc", "image": "a.jpg"}, {}, "'conversations'"),
]


@pytest.mark.parametrize("case, record, options, phrase", TO_DJ_REFUSED, ids=[c[0] for c in TO_DJ_REFUSED])
def test_llava_to_dj_refuses_what_the_tool_refuses(case, record, options, phrase):
    with pytest.raises(LlavaRecordError, match=phrase) as err:
        llava_to_dj(record, where="train.json:9", **options)
    assert str(err.value).startswith("train.json:9: ") and repr(record["id"]) in str(err.value)


def test_the_tools_output_reads_as_a_sample():
    """The tool keeps <image>; such a line must read back (it used to fail: '0 image tokens but 1 images')."""
    line = {"id": "000000033471", "text": "[[human]]: <image>\nWhat?\n[[gpt]]: A bus. " + EOC, "images": [BUS]}
    sample = Sample.from_json(line)
    assert sample.chunks() == [("[[human]]: What? [[gpt]]: A bus.", [BUS])]
    assert Sample.from_json({"id": 1, "text": f"<__dj__image> a <image> b {EOC}", "images": ["x", "y"]}).images == ["x", "y"]
    with pytest.raises(SampleError, match="2 image tokens but 1 images"):
        Sample.from_json(llava_to_dj(TO_DJ[11][1]).to_json())  # the tool writes it; it cannot be used


def dj(sample_id, text, images) -> Sample:
    return Sample.from_json({"id": sample_id, "text": text, "images": images})


CAPTION_ORIGINAL = {"id": "GCC_7", "image": "gcc/7.jpg",
                    "conversations": turns("Give a brief description of the image.\n<image>", "a red bus on a street")}
NUMERIC_ORIGINAL = {"id": 7, "image": "p/7.jpg", "conversations": turns("<image>\nWrite a caption.", "old caption")}

# (case, Data-Juicer sample, dj_to_llava options, expected LLaVA record)
TO_LLAVA = [
    ("the tool's example back to LLaVA",
     dj("000000033471", TO_DJ[0][4], [BUS]), {}, {"id": "000000033471", "conversations": TO_DJ[0][1]["conversations"], "image": BUS}),
    ("a numeric id stays a number",
     dj(7, "[[human]]: <image>\nQ\n[[gpt]]: A " + EOC, ["a.jpg"]), {},
     {"id": 7, "conversations": turns("<image>\nQ", "A"), "image": "a.jpg"}),
    ("inner whitespace kept, the ends stripped",
     dj("w", "[[human]]: <image>\nQ  two  spaces\n[[gpt]]:   A  b   " + EOC, ["w.jpg"]), {},
     {"id": "w", "conversations": turns("<image>\nQ  two  spaces", "A  b"), "image": "w.jpg"}),
    ("a later image token is dropped (keep_only_first_image)",
     dj("k", "[[human]]: <image>\nQ1\n[[gpt]]: A1\n[[human]]: <image>\nQ2\n[[gpt]]: A2 " + EOC, ["k.jpg", "k.jpg"]), {},
     {"id": "k", "conversations": turns("<image>\nQ1", "A1", "Q2", "A2"), "image": "k.jpg"}),
    ("... and kept without keep_only_first_image",
     dj("k", "[[human]]: <image>\nQ1\n[[gpt]]: A1\n[[human]]: <image>\nQ2\n[[gpt]]: A2 " + EOC, ["k.jpg", "k.jpg"]),
     {"keep_only_first_image": False},
     {"id": "k", "conversations": turns("<image>\nQ1", "A1", "<image>\nQ2", "A2"), "image": "k.jpg"}),
    ("a question closed by <image>, newline kept",
     dj("c", "[[human]]: Describe this.\n<image>\n[[gpt]]: a dog " + EOC, ["c.jpg"]), {},
     {"id": "c", "conversations": turns("Describe this.\n<image>", "a dog"), "image": "c.jpg"}),
    ("no image: no 'image' key",
     dj("t", "[[human]]: Hi\n[[gpt]]: Hello " + EOC, []), {}, {"id": "t", "conversations": turns("Hi", "Hello")}),
    ("an absolute image path is kept as written",
     dj("abs", "[[human]]: <image>\nQ\n[[gpt]]: A " + EOC, ["/data/a.jpg"]), {},
     {"id": "abs", "conversations": turns("<image>\nQ", "A"), "image": "/data/a.jpg"}),
    ("restored question of a caption sample (restore_questions)",
     dj("GCC_7", "<image>\na red bus on a street " + EOC, ["gcc/7.jpg"]), {"originals": llava_originals([CAPTION_ORIGINAL])},
     CAPTION_ORIGINAL),
    ("restoring gives the original id its JSON type back",
     dj("7", "<image>\na new caption " + EOC, ["p/7.jpg"]), {"originals": llava_originals([NUMERIC_ORIGINAL])},
     {"id": 7, "conversations": [NUMERIC_ORIGINAL["conversations"][0], {"from": "gpt", "value": "a new caption"}], "image": "p/7.jpg"}),
    ("both spellings read: <__dj__image> becomes <image>",
     dj("s", "[[human]]: <__dj__image>\nQ\n[[gpt]]: A " + EOC, ["s.jpg"]), {},
     {"id": "s", "conversations": turns("<image>\nQ", "A"), "image": "s.jpg"}),
    ("this platform's caption layout restores like the tool's",
     dj("GCC_7", "<__dj__image> a red bus on a street " + EOC, ["gcc/7.jpg"]), {"originals": llava_originals([CAPTION_ORIGINAL])},
     CAPTION_ORIGINAL),
    ("double spaces of a caption are kept",
     dj("GCC_7", "<image>\na  red bus  on a street " + EOC, ["gcc/7.jpg"]), {"originals": llava_originals([CAPTION_ORIGINAL])},
     {**CAPTION_ORIGINAL, "conversations": [CAPTION_ORIGINAL["conversations"][0], {"from": "gpt", "value": "a  red bus  on a street"}]}),
]


@pytest.mark.parametrize("case, sample, options, expected", TO_LLAVA, ids=[c[0] for c in TO_LLAVA])
def test_dj_to_llava_matches_the_tool(case, sample, options, expected):
    record = dj_to_llava(sample, **options)
    assert record == expected
    assert type(record["id"]) is type(expected["id"])
    assert list(record)[:2] == ["id", "conversations"]  # the tool's key order


TO_LLAVA_REFUSED = [
    ("more than one distinct image", dj("two", f"<__dj__image> a <__dj__image> b {EOC}", ["a.jpg", "b.jpg"]), {}, "2 distinct images"),
    ("a sample without its original question",
     dj("GCC_8", "<image>\na cat " + EOC, ["gcc/8.jpg"]), {"originals": llava_originals([CAPTION_ORIGINAL])}, "no original LLaVA record"),
    ("a caption sample without originals, as the tool does", dj("cap", "<image>\na cat " + EOC, ["c.jpg"]),
     {"plain_template": False}, "needs its original questions"),
    ("one turn only", dj("one", "[[human]]: <image>\nQ " + EOC, ["a.jpg"]), {}, "do not make"),
    ("text before the first role", dj("pre", "intro [[human]]: <image>\nQ\n[[gpt]]: A " + EOC, ["a.jpg"]), {}, "do not make"),
]


@pytest.mark.parametrize("case, sample, options, phrase", TO_LLAVA_REFUSED, ids=[c[0] for c in TO_LLAVA_REFUSED])
def test_dj_to_llava_refuses_what_the_tool_refuses(case, sample, options, phrase):
    with pytest.raises(SampleError, match=phrase) as err:
        dj_to_llava(sample, where="clean.jsonl:4", **options)
    assert str(err.value).startswith("clean.jsonl:4: sample ")


def test_the_plain_pretraining_record_is_kept_for_training():
    """Not the tool's: a caption sample with no question becomes LLaVA's plain record (stage-1 training, held-out loss)."""
    record = dj_to_llava(dj("p", "<__dj__image> a  red bus " + EOC, ["p.jpg"]))
    assert record == {"id": "p", "conversations": turns("<image>", "a  red bus"), "image": "p.jpg"}
    with pytest.raises(SampleError, match="no original question"):
        dj_to_llava(dj("p", "<image>\nx " + EOC, ["p.jpg"]), questions={"other": "<image>\nQ"})


@pytest.mark.parametrize("record", [c[1] for c in TO_DJ[:7]] + [TO_DJ[9][1], TO_DJ[10][1]], ids=lambda r: str(r["id"]))
def test_round_trip_through_both_tools_is_the_identity(record):
    sample = Sample.from_json(json.loads(json.dumps(llava_to_dj(record, str_id=False).to_json())))
    back = dj_to_llava(sample)
    stripped = [{"from": t["from"], "value": t["value"].strip()} for t in record["conversations"]]
    assert back["id"] == record["id"] and type(back["id"]) is type(record["id"])
    assert back["conversations"] == stripped and back.get("image") == (record.get("image") or None)


def test_file_conversions_name_the_line(tmp_path):
    source = tmp_path / "llava.json"
    good = {"id": 1, "image": "a.jpg", "conversations": turns("<image>\nQ", "A")}
    bad = {"id": "bad", "image": "b.jpg", "conversations": turns("Q <image> Q", "A")}
    source.write_text("[\n" + json.dumps(good, indent=2) + ",\n" + json.dumps(bad, indent=2) + "\n]\n")
    assert [where for _, where in iter_llava_json(source)] == ["llava.json:2", "llava.json:16"]
    with pytest.raises(LlavaRecordError, match=r"^llava\.json:16: record 'bad': the first human turn"):
        llava_file_to_dj(source, tmp_path / "dj.jsonl")
    assert not (tmp_path / "dj.jsonl").exists()
    source.write_text(json.dumps([good, CAPTION_ORIGINAL]))
    assert llava_file_to_dj(source, tmp_path / "dj.jsonl", only_keep_caption=True) == 2
    lines = [json.loads(line) for line in (tmp_path / "dj.jsonl").read_text().splitlines()]
    assert lines[0] == {"id": "1", "text": "<image>\nA " + EOC, "images": ["a.jpg"]}
    assert dj_file_to_llava(tmp_path / "dj.jsonl", tmp_path / "back.json", original_llava=source) == 2
    assert json.loads((tmp_path / "back.json").read_text()) == [good, CAPTION_ORIGINAL]
    (tmp_path / "dj.jsonl").write_text((tmp_path / "dj.jsonl").read_text() + json.dumps({"id": "x", "text": "<image>\nc " + EOC, "images": ["x.jpg"]}) + "\n")
    with pytest.raises(SampleError, match=r"^dj\.jsonl:3: sample 'x': no original LLaVA record"):
        dj_file_to_llava(tmp_path / "dj.jsonl", tmp_path / "back.json", original_llava=source)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"id": "c", "text": "<image>\nc " + EOC, "images": ["c.jpg"]}) + "\n")
    with pytest.raises(SampleError, match=r"^captions\.jsonl:1: "):  # the tool refuses a caption with no question
        dj_file_to_llava(tmp_path / "captions.jsonl", tmp_path / "captions.json")
    assert dj_file_to_llava(tmp_path / "captions.jsonl", tmp_path / "captions.json", plain_template=True) == 1
    (source.parent / "broken.json").write_text('[\n{"id": 1,\n "conversations": [}\n]')
    with pytest.raises(ValueError, match=r"^broken\.json:3: not valid JSON"):
        list(iter_llava_json(source.parent / "broken.json"))
