"""Property tests: malformed input either parses or fails with the documented error, never otherwise."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bettersynth.core.sample import IMAGE_TOKEN, Sample, SampleError
from bettersynth.data.jsonl import BadLine, read_jsonl
from bettersynth.data.llava import LlavaRecordError, validate_record
from bettersynth.eval.normalize import normalize_answer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
sample_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=6), st.integers()),
        "text": st.one_of(st.text(max_size=40), st.just(f"{IMAGE_TOKEN} a caption"), json_values),
        "images": st.one_of(st.lists(st.text(max_size=10), max_size=3), json_values),
        "meta": json_values,
    },
)


@given(st.one_of(sample_like, json_values))
def test_sample_from_json_parses_or_raises_sample_error(record):
    try:
        sample = Sample.from_json(record, "f.jsonl:1")
    except SampleError as exc:
        assert "f.jsonl:1" in str(exc)
    else:
        assert sample.text.count(IMAGE_TOKEN) == len(sample.images)
        assert Sample.from_json(sample.to_json()) == sample


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.lists(st.one_of(st.binary(max_size=60), sample_like.map(lambda r: json.dumps(r).encode())), max_size=8))
def test_read_jsonl_accounts_for_every_non_blank_line(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_jsonl(path))
    assert all(isinstance(item, (Sample, BadLine)) for item in items)
    assert len(items) == sum(1 for line in path.read_bytes().splitlines() if line.strip())
    for item in items:
        if isinstance(item, BadLine):
            assert item.where.startswith("data.jsonl:") and item.error


@given(st.one_of(json_values, st.fixed_dictionaries({"id": st.text(max_size=5), "conversations": json_values})))
def test_llava_records_validate_or_raise_llava_error(record):
    try:
        validate_record(record)
    except LlavaRecordError:
        pass


@given(st.text(max_size=80))
def test_normalize_answer_always_returns_a_single_spaced_string(text):
    result = normalize_answer(text)
    assert isinstance(result, str)
    assert "  " not in result and result == result.strip()
