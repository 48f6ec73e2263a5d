"""Convert between Data-Juicer samples and LLaVA json records, keeping ids.

Why: data is cleaned in Data-Juicer's jsonl but trained on in LLaVA's json; a
sample must cross that border both ways with its id and image path intact, so
that every trained record can be traced back to the sample it came from.

Two Data-Juicer shapes are understood (as in Data-Juicer's ``llava_to_dj`` /
``dj_to_llava`` tools):

* caption samples, ``"<__dj__image> a red bus <|__dj__eoc|>"``: the pretraining
  (stage 1) data; they become a *plain* record, ``human: "<image>"``,
  ``gpt: <caption>``, unless ``questions`` restores the original human turn;
* conversation samples, ``"[[human]]: <__dj__image>\\nQ\\n[[gpt]]: A <|__dj__eoc|>"``.

Example::

    questions = llava_questions(original_records)          # id -> human turn
    records = [dj_to_llava(s, questions=questions) for s in samples]
    write_llava_json(out / "pretrain.json", records)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from bettersynth.core.sample import CHUNK_END, IMAGE_TOKEN, Sample, SampleError, caption_text, clean_text

LLAVA_IMAGE_TOKEN = "<image>"
HUMAN, GPT = "human", "gpt"
_ROLE = re.compile(r"\[\[([a-zA-Z]+)\]\]: ")


class LlavaRecordError(ValueError):
    """A LLaVA record that cannot be used; the message names the record id and the reason."""


def validate_record(record: Any) -> str:
    """Check a LLaVA record's shape (alternating human/gpt turns); return its id as a string."""
    if not isinstance(record, dict) or "id" not in record:
        raise LlavaRecordError(f"LLaVA record without an 'id': {str(record)[:80]!r}")
    record_id = str(record["id"])
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise LlavaRecordError(f"record {record_id!r}: 'conversations' missing or empty")
    for i, turn in enumerate(turns):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise LlavaRecordError(
                f"record {record_id!r}: turn {i} must be {{'from': {expected!r}, 'value': str}}"
            )
    if len(turns) % 2:
        raise LlavaRecordError(f"record {record_id!r}: {len(turns)} turns, the last human turn has no reply")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise LlavaRecordError(f"record {record_id!r}: 'image' must be one relative path")
    n_tokens = sum(t["value"].count(LLAVA_IMAGE_TOKEN) for t in turns)
    if n_tokens != (1 if image else 0):
        raise LlavaRecordError(
            f"record {record_id!r}: {n_tokens} {LLAVA_IMAGE_TOKEN} tokens but {1 if image else 0} images"
        )
    return record_id


def llava_questions(records: Iterable[dict]) -> dict[str, str]:
    """Map id -> first human turn, for ``dj_to_llava(..., questions=...)`` (``restore_questions``)."""
    return {str(r["id"]): r["conversations"][0]["value"] for r in records}


def llava_to_dj(record: dict, only_keep_caption: bool = False) -> Sample:
    """One LLaVA record as a Data-Juicer sample with the same id and image path.

    ``only_keep_caption`` turns a single-turn record into a caption sample (the
    pretraining shape: the question is dropped, the answer is the caption);
    otherwise the whole conversation is kept with ``[[role]]: `` markers.
    """
    record_id = validate_record(record)
    turns = record["conversations"]
    images = [record["image"]] if record.get("image") else []
    if only_keep_caption:
        if len(turns) != 2:
            raise LlavaRecordError(f"record {record_id!r}: {len(turns)} turns cannot become one caption")
        if not images:
            raise LlavaRecordError(f"record {record_id!r}: a caption sample needs an image")
        return Sample(id=record_id, text=caption_text(clean_text(turns[1]["value"])), images=images)
    lines = [f"[[{t['from']}]]: {t['value'].replace(LLAVA_IMAGE_TOKEN, IMAGE_TOKEN)}" for t in turns]
    return Sample(id=record_id, text="\n".join(lines) + f" {CHUNK_END}", images=images)


def dj_to_llava(
    sample: Sample,
    questions: Mapping[str, str] | None = None,
    image_root: Path | None = None,
) -> dict:
    """One Data-Juicer sample as a LLaVA record with the same id.

    ``questions`` (id -> human turn, see ``llava_questions``) restores a caption
    sample's original question; without it the plain pretraining prompt
    ``"<image>"`` is used. Absolute image paths are made relative to
    ``image_root``; relative ones are kept as they are.
    """
    if len(set(sample.images)) > 1:
        raise SampleError(f"sample {sample.id!r}: {len(set(sample.images))} distinct images; LLaVA takes one")
    record: dict[str, Any] = {"id": sample.id}
    if sample.images:
        record["image"] = _relative(sample.images[0], image_root, sample.id)
    if _ROLE.match(sample.text.lstrip()):
        record["conversations"] = _parse_conversation(sample)
    else:
        record["conversations"] = _caption_conversation(sample, questions)
    validate_record(record)
    return record


def _caption_conversation(sample: Sample, questions: Mapping[str, str] | None) -> list[dict]:
    chunks = sample.chunks()
    if len(chunks) != 1 or len(chunks[0][1]) != 1:
        raise SampleError(f"sample {sample.id!r}: a caption sample needs one chunk with one image")
    question = (questions or {}).get(sample.id, LLAVA_IMAGE_TOKEN)
    if LLAVA_IMAGE_TOKEN not in question:
        raise SampleError(f"sample {sample.id!r}: restored question has no {LLAVA_IMAGE_TOKEN}")
    return [{"from": HUMAN, "value": question}, {"from": GPT, "value": chunks[0][0]}]


def _parse_conversation(sample: Sample) -> list[dict]:
    text = sample.text.replace(CHUNK_END, "").replace(IMAGE_TOKEN, LLAVA_IMAGE_TOKEN)
    parts = _ROLE.split(text)[1:]  # [role, value, role, value, ...]
    turns = [{"from": parts[i], "value": parts[i + 1].strip()} for i in range(0, len(parts), 2)]
    # A sample with several images of the same path repeats the token; LLaVA keeps the first.
    seen = False
    for turn in turns:
        if LLAVA_IMAGE_TOKEN in turn["value"]:
            if seen:
                turn["value"] = " ".join(turn["value"].replace(LLAVA_IMAGE_TOKEN, " ").split())
            else:
                first, rest = turn["value"].split(LLAVA_IMAGE_TOKEN, 1)
                turn["value"] = first + LLAVA_IMAGE_TOKEN + rest.replace(LLAVA_IMAGE_TOKEN, "")
            seen = True
    return turns


def _relative(path: str, root: Path | None, sample_id: str) -> str:
    if not os.path.isabs(path):
        return path
    if root is None:
        raise SampleError(f"sample {sample_id!r}: absolute image path {path!r} needs an image_root")
    try:
        return Path(path).relative_to(Path(root)).as_posix()
    except ValueError:
        raise SampleError(f"sample {sample_id!r}: image {path!r} is outside image_root {str(root)!r}") from None


def read_llava_json(path: str | Path) -> list[dict]:
    """Read a LLaVA json list, validating every record (errors name the id)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise LlavaRecordError(f"{path}: a LLaVA dataset is a JSON list")
    for record in records:
        validate_record(record)
    return records


def write_llava_json(path: str | Path, records: Iterable[dict]) -> int:
    """Write a LLaVA json list atomically (temp file, then rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return len(records)
