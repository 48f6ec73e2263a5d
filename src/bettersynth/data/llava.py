"""Convert between Data-Juicer samples and LLaVA json records, as Data-Juicer's own tools do.

Why: data is cleaned in Data-Juicer's jsonl but trained on in LLaVA's json; a
sample must cross that border both ways with its id and image path intact, so
that every trained record can be traced back to the sample it came from, and
a Data-Juicer user must get from these functions what Data-Juicer's
``tools/fmt_conversion/multimodal/{llava_to_dj,dj_to_llava}.py`` give on the
same input (their default arguments):

* ``llava_to_dj``: one ``[[role]]: value`` line per turn, human and gpt of a
  round joined by ``"\\n"``, rounds joined by ``"\\n"``, then ``" <|__dj__eoc|>"``;
  the values are kept byte for byte (``<image>`` where the record had it, the
  newline after it, every space). A record with an image must have ``<image>``
  at the start or the end of its first human turn; an odd number of turns is
  refused. ``only_keep_caption`` writes ``"<image>\\n<answer>"`` per round. Ids
  become strings unless ``str_id=False`` (the tool's default and option).
* ``dj_to_llava``: the text split at ``[[role]]: `` markers, each value
  stripped of surrounding whitespace and of a trailing ``<|__dj__eoc|>``; from
  the second turn on, an image token at the start or end of a value is
  dropped (``keep_only_first_image``). The id keeps its JSON type. With the
  original LLaVA records (``originals``, the tool's ``restore_questions``), a
  caption sample gets its original first human turn back, and its original
  id; a sample whose id is not among them is refused. More than one distinct
  image is refused.

Beyond the tools: both image spellings are read (``<__dj__image>`` becomes
``<image>`` on the LLaVA side); ``questions`` (id -> human turn) restores a
question without the original records; and a caption sample converted with
neither becomes LLaVA's *plain* pretraining record, ``human: "<image>"``
(``plain_template``; the tool refuses such a sample, ``plain_template=False``
does too). Errors name ``file:line`` when given ``where``.

Example::

    originals = llava_originals(read_llava_json("llava_pretrain.json"))
    records = [dj_to_llava(s, originals=originals) for s in samples]
    write_llava_json(out / "pretrain.json", records)
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bettersynth.core.sample import (
    CHUNK_END,
    IMAGE_TOKEN,
    IMAGE_TOKENS,
    LLAVA_IMAGE_TOKEN,
    Sample,
    SampleError,
)
from bettersynth.data.jsonl import BadLine, iter_jsonl, write_samples

log = logging.getLogger(__name__)

HUMAN, GPT = "human", "gpt"
SENT_SEPARATOR = "\n"  # the tools' sent_separator
ROLE_PATTERN = re.compile(r"\[\[([a-zA-Z]*?)\]\]: ")  # the tools' "[[%s]]: " role marker
__all__ = [
    "GPT", "HUMAN", "LLAVA_IMAGE_TOKEN", "LlavaRecordError", "dj_file_to_llava", "dj_to_llava", "iter_llava_json",
    "llava_file_to_dj", "llava_originals", "llava_questions", "llava_to_dj", "read_llava_json", "validate_record",
    "write_llava_json",
]


class LlavaRecordError(ValueError):
    """A LLaVA record that cannot be used; the message names the record id and the reason."""


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def validate_record(record: Any, where: str = "") -> str:
    """Check a LLaVA record is fit to train on (alternating human/gpt turns, one ``<image>`` per image);
    return its id as a string."""
    if not isinstance(record, dict) or "id" not in record:
        raise LlavaRecordError(f"{_at(where)}LLaVA record without an 'id': {str(record)[:80]!r}")
    record_id = str(record["id"])
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise LlavaRecordError(f"{_at(where)}record {record_id!r}: 'conversations' missing or empty")
    for i, turn in enumerate(turns):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise LlavaRecordError(f"{_at(where)}record {record_id!r}: turn {i} must be {{'from': {expected!r}, 'value': str}}")
    if len(turns) % 2:
        raise LlavaRecordError(f"{_at(where)}record {record_id!r}: {len(turns)} turns, the last human turn has no reply")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise LlavaRecordError(f"{_at(where)}record {record_id!r}: 'image' must be one relative path")
    n_tokens = sum(t["value"].count(LLAVA_IMAGE_TOKEN) for t in turns)
    if n_tokens != (1 if image else 0):
        raise LlavaRecordError(f"{_at(where)}record {record_id!r}: {n_tokens} {LLAVA_IMAGE_TOKEN} tokens but {1 if image else 0} images")
    return record_id


def llava_questions(records: Iterable[dict]) -> dict[str, str]:
    """Map id -> first human turn, for ``dj_to_llava(..., questions=...)``."""
    return {str(r["id"]): r["conversations"][0]["value"] for r in records}


def llava_originals(records: Iterable[dict]) -> dict[str, dict]:
    """Map str(id) -> the original record, for ``dj_to_llava(..., originals=...)`` (the tool's
    ``restore_questions`` with ``original_llava_ds_path``; a later duplicate id wins, as in the tool)."""
    return {str(r["id"]): r for r in records}


def llava_to_dj(record: Any, only_keep_caption: bool = False, str_id: bool = True, where: str = "") -> Sample:
    """One LLaVA record as a Data-Juicer sample, as Data-Juicer's ``llava_to_dj.py`` writes it.

    The text keeps every value byte for byte, ``<image>`` included (both image
    spellings count as image tokens here). ``str_id`` False keeps a numeric id
    a number. Refused, naming ``where`` and the id: no id, no conversations, an
    odd number of turns, and a record with an image whose first human turn has
    ``<image>`` neither at its start nor at its end.
    """
    if not isinstance(record, dict):
        raise LlavaRecordError(f"{_at(where)}LLaVA record is not a JSON object: {str(record)[:80]!r}")
    if "id" not in record:
        raise LlavaRecordError(f"{_at(where)}LLaVA record without an 'id': {str(record)[:80]!r}")
    raw_id = record["id"]
    sample_id = str(raw_id)
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise LlavaRecordError(f"{_at(where)}record {sample_id!r}: 'conversations' missing or not a list")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise LlavaRecordError(f"{_at(where)}record {sample_id!r}: turn {i} must be {{'from': str, 'value': str}}")
    image = record.get("image", "")
    if image is None:
        image = ""
    if not isinstance(image, str):
        raise LlavaRecordError(f"{_at(where)}record {sample_id!r}: 'image' must be one path, got {type(image).__name__}")
    if len(turns) % 2:
        raise LlavaRecordError(f"{_at(where)}record {sample_id!r}: {len(turns)} turns do not make (human, gpt) rounds")
    if not image:
        log.warning("%srecord %r has no image: not a multimodal sample", _at(where), sample_id)
    if only_keep_caption and len(turns) > 2:
        log.warning("%srecord %r has %d turns: only_keep_caption suits single-turn (pretraining) records",
                    _at(where), sample_id, len(turns))
    images: list[str] = []
    lines = []
    for i in range(len(turns) // 2):
        human, gpt = turns[2 * i], turns[2 * i + 1]
        if image and i == 0:
            question = human["value"]
            if not (question.startswith(LLAVA_IMAGE_TOKEN) or question.endswith(LLAVA_IMAGE_TOKEN)):
                raise LlavaRecordError(f"{_at(where)}record {sample_id!r}: the first human turn has {LLAVA_IMAGE_TOKEN} "
                                       "neither at its start nor at its end")
            images.append(image)
        if only_keep_caption:
            lines.append(LLAVA_IMAGE_TOKEN + SENT_SEPARATOR + gpt["value"])
        else:
            lines.append(f"[[{human['from']}]]: {human['value']}{SENT_SEPARATOR}[[{gpt['from']}]]: {gpt['value']}")
    text = SENT_SEPARATOR.join(lines) + f" {CHUNK_END}"
    return Sample(id=sample_id, text=text, images=images, json_id=sample_id if str_id else raw_id)


def dj_to_llava(
    sample: Sample,
    questions: Mapping[str, str] | None = None,
    image_root: Path | None = None,
    *,
    originals: Mapping[str, dict] | None = None,
    keep_only_first_image: bool = True,
    plain_template: bool = True,
    where: str = "",
) -> dict:
    """One Data-Juicer sample as a LLaVA record, as Data-Juicer's ``dj_to_llava.py`` writes it.

    ``originals`` (``llava_originals``) restores a caption sample's original
    question and id; ``questions`` (id -> human turn, ``llava_questions``)
    restores a question only. With either, a sample they do not know is
    refused. Without them, a text of ``[[role]]: `` turns becomes those turns,
    and a caption sample becomes the plain record ``human: "<image>"`` unless
    ``plain_template`` is False (then refused, as the tool does). Absolute
    image paths are made relative to ``image_root`` when it is given.
    """
    prefix = _at(where)
    distinct = list(dict.fromkeys(sample.images))
    if len(distinct) > 1:
        raise SampleError(f"{prefix}sample {sample.id!r}: {len(distinct)} distinct images; LLaVA takes one")
    record_id = sample.json_id_value()
    if originals is not None or questions is not None:
        answer = {"value": _llava_tokens(_clean_sentence(sample.text, 1, keep_only_first_image))}
        if originals is not None:
            original = originals.get(str(record_id))
            if original is None:
                raise SampleError(f"{prefix}sample {sample.id!r}: no original LLaVA record with this id, "
                                  "so its question cannot be restored")
            record_id = original["id"]
            first, reply = original["conversations"][0], original["conversations"][1]
            conversations = [first, {"from": reply["from"], **answer}]
        else:
            if sample.id not in questions:
                raise SampleError(f"{prefix}sample {sample.id!r}: no original question for this id")
            question = questions[sample.id]
            if distinct and LLAVA_IMAGE_TOKEN not in question:
                raise SampleError(f"{prefix}sample {sample.id!r}: restored question has no {LLAVA_IMAGE_TOKEN}")
            conversations = [{"from": HUMAN, "value": question}, {"from": GPT, **answer}]
    elif ROLE_PATTERN.search(sample.text) is None:
        if not plain_template:
            raise SampleError(f"{prefix}sample {sample.id!r}: a caption sample without [[human]]/[[gpt]] turns needs "
                              "its original questions (Data-Juicer's dj_to_llava refuses it too)")
        if len(sample.chunks()) != 1 or len(distinct) != 1:
            raise SampleError(f"{prefix}sample {sample.id!r}: a caption sample needs one chunk with one image")
        caption = _llava_tokens(_clean_sentence(sample.text, 1, True))
        conversations = [{"from": HUMAN, "value": LLAVA_IMAGE_TOKEN}, {"from": GPT, "value": caption}]
    else:
        conversations = _split_turns(sample, keep_only_first_image, prefix)
    record: dict[str, Any] = {"id": record_id, "conversations": conversations}
    if distinct:
        record["image"] = _relative(distinct[0], image_root, sample.id, prefix)
    if originals is None and questions is None and ROLE_PATTERN.search(sample.text) is None:
        validate_record(record, where)  # the plain template is this platform's: it must be fit to train on
    return record


def _split_turns(sample: Sample, keep_only_first_image: bool, prefix: str) -> list[dict]:
    parts = ROLE_PATTERN.split(sample.text)
    if parts[0] == "":
        parts = parts[1:]
    if len(parts) % 4:
        raise SampleError(f"{prefix}sample {sample.id!r}: the [[role]] turns do not make (human, gpt) rounds "
                          f"({len(parts)} parts after splitting at the role markers)")
    return [{"from": parts[2 * i], "value": _llava_tokens(_clean_sentence(parts[2 * i + 1], i, keep_only_first_image))}
            for i in range(len(parts) // 2)]


def _clean_sentence(sentence: str, turn: int, keep_only_first_image: bool) -> str:
    """One turn's value as the tool cleans it: surrounding whitespace, a trailing end-of-chunk token and,
    after the first turn, an image token at either end removed; what lies between is kept."""
    sentence = sentence.strip()
    if sentence.endswith(SENT_SEPARATOR):
        sentence = sentence[: -len(SENT_SEPARATOR)].strip()
    if sentence.endswith(CHUNK_END):
        sentence = sentence[: -len(CHUNK_END)].strip()
    if turn > 0 and keep_only_first_image:
        token = next((t for t in IMAGE_TOKENS if sentence.startswith(t)), None)
        if token is not None:
            sentence = sentence[len(token):].strip()
            if sentence.startswith(SENT_SEPARATOR):
                sentence = sentence[len(SENT_SEPARATOR):].strip()
        token = next((t for t in IMAGE_TOKENS if sentence.endswith(t)), None)
        if token is not None:
            sentence = sentence[: -len(token)].strip()
            if sentence.endswith(SENT_SEPARATOR):
                sentence = sentence[: -len(SENT_SEPARATOR)].strip()
    return sentence


def _llava_tokens(value: str) -> str:
    """Data-Juicer's image token in LLaVA's spelling (LLaVA knows only ``<image>``)."""
    return value.replace(IMAGE_TOKEN, LLAVA_IMAGE_TOKEN)


def _relative(path: str, root: Path | None, sample_id: str, prefix: str = "") -> str:
    if not os.path.isabs(path) or root is None:
        return path
    try:
        return Path(path).relative_to(Path(root)).as_posix()
    except ValueError:
        raise SampleError(f"{prefix}sample {sample_id!r}: image {path!r} is outside image_root {str(root)!r}") from None


def iter_llava_json(path: str | Path) -> Iterator[tuple[Any, str]]:
    """Each element of a JSON list file with ``file:line`` of its first character.

    Not a JSON list, or an element that is not valid JSON, raises ``ValueError``
    naming the line (the rest of the file cannot be read after it)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position, line, counted = 0, 1, 0

    def where(at: int) -> str:
        nonlocal line, counted
        line += text.count("\n", counted, at)
        counted = at
        return f"{path.name}:{line}"

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    position = skip(position)
    if text.startswith("\ufeff", position):
        position = skip(position + 1)
    if position >= len(text) or text[position] != "[":
        raise ValueError(f"{where(position)}: a LLaVA dataset is a JSON list")
    position = skip(position + 1)
    if position < len(text) and text[position] == "]":
        return
    while True:
        at = where(position)
        try:
            element, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where(exc.pos)}: not valid JSON ({exc.msg})") from None
        yield element, at
        position = skip(position)
        if position < len(text) and text[position] == ",":
            position = skip(position + 1)
            continue
        if position < len(text) and text[position] == "]":
            if skip(position + 1) != len(text):
                raise ValueError(f"{where(skip(position + 1))}: text after the end of the JSON list")
            return
        raise ValueError(f"{where(position)}: expected ',' or ']' in the JSON list")


def read_llava_json(path: str | Path) -> list[dict]:
    """Read a LLaVA json list, validating every record for training (errors name file:line and the id)."""
    records = []
    for record, where in iter_llava_json(path):
        validate_record(record, where)
        records.append(record)
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


def llava_file_to_dj(source: str | Path, target: str | Path, only_keep_caption: bool = False, str_id: bool = True) -> int:
    """A LLaVA json file as a Data-Juicer jsonl, as the tool converts it; the first record it
    refuses stops the conversion, naming ``file:line`` and the id (nothing is written)."""
    samples = [llava_to_dj(record, only_keep_caption, str_id, where) for record, where in iter_llava_json(source)]
    return write_samples(target, samples)


def dj_file_to_llava(
    source: str | Path, target: str | Path, original_llava: str | Path | None = None, keep_only_first_image: bool = True,
    plain_template: bool = False,
) -> int:
    """A Data-Juicer jsonl as a LLaVA json file, as the tool converts it (``original_llava``: its
    ``restore_questions`` with ``original_llava_ds_path``); a bad line stops it, naming ``file:line``.
    A caption sample with no question to restore is refused, as the tool refuses it; ``plain_template``
    writes it as a stage-1 record (``human: "<image>"``) instead."""
    originals = llava_originals(record for record, _ in iter_llava_json(original_llava)) if original_llava else None
    records = []
    for item, position in iter_jsonl(source):
        if isinstance(item, BadLine):
            raise ValueError(item.error)  # noqa: TRY004 - a bad line is a value error of the file, not a type error
        records.append(dj_to_llava(item, originals=originals, keep_only_first_image=keep_only_first_image,
                                   plain_template=plain_template, where=f"{Path(source).name}:{position.line}"))
    return write_llava_json(target, records)
