"""The in-memory form of one Data-Juicer sample.

Why: every step reads and writes the same jsonl format, so ids, meta and the
per-op stats survive a round trip unchanged, whatever step touched them. An
id keeps its JSON type (``7`` stays a number when written back) and fields
this platform does not use are written back as they came.

An image is marked in the text by Data-Juicer's ``<__dj__image>`` or by
LLaVA's ``<image>``: Data-Juicer's ``llava_to_dj`` tool keeps ``<image>`` (a
recipe then says ``image_special_token: <image>``), so both spellings count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_TOKEN = "<__dj__image>"  # Data-Juicer's default, what this platform's mappers write
LLAVA_IMAGE_TOKEN = "<image>"  # LLaVA's, kept by Data-Juicer's llava_to_dj tool
IMAGE_TOKENS = (IMAGE_TOKEN, LLAVA_IMAGE_TOKEN)  # neither spelling contains the other
CHUNK_END = "<|__dj__eoc|>"
STATS_KEY = "__dj__stats__"
SPECIAL_TOKENS = (*IMAGE_TOKENS, CHUNK_END)
SAMPLE_KEYS = ("id", "text", "images", "meta", STATS_KEY)  # every other key of a record is kept in ``extra``


def count_image_tokens(text: str) -> int:
    """Image tokens in ``text``, in either spelling."""
    return sum(text.count(token) for token in IMAGE_TOKENS)


class SampleError(ValueError):
    """A sample that cannot be used; the message names the sample and the reason."""


@dataclass
class Sample:
    id: str
    text: str
    images: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # the record's other fields, written back unchanged
    # the id as the record had it (e.g. the number 7); written back while ``id`` still spells it
    json_id: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, record: Any, where: str = "") -> "Sample":
        """Validate one decoded jsonl record; ``where`` (file:line) goes into errors."""
        prefix = f"{where}: " if where else ""
        if not isinstance(record, dict):
            raise SampleError(f"{prefix}sample is not a JSON object")
        if "id" not in record:
            raise SampleError(f"{prefix}sample has no 'id'")
        sample_id = str(record["id"])
        text = record.get("text")
        if not isinstance(text, str):
            raise SampleError(f"{prefix}sample {sample_id!r}: 'text' missing or not a string")
        images = record.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise SampleError(f"{prefix}sample {sample_id!r}: 'images' must be a list of paths")
        for key in ("meta", STATS_KEY):
            if record.get(key) is not None and not isinstance(record[key], dict):
                raise SampleError(f"{prefix}sample {sample_id!r}: {key!r} must be an object")
        sample = cls(
            id=sample_id,
            text=text,
            images=list(images),
            meta=dict(record.get("meta") or {}),
            stats=dict(record.get(STATS_KEY) or {}),
            extra={k: v for k, v in record.items() if k not in SAMPLE_KEYS},
            json_id=record["id"],
        )
        if count_image_tokens(text) != len(images):
            raise SampleError(
                f"{prefix}sample {sample_id!r}: {count_image_tokens(text)} image tokens "
                f"but {len(images)} images"
            )
        return sample

    def json_id_value(self) -> Any:
        """The id to write: as read (its JSON type kept) unless an op gave the sample a new id."""
        raw = self.json_id
        return raw if raw is not None and not isinstance(raw, bool) and str(raw) == self.id else self.id

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.json_id_value(), "text": self.text, "images": self.images}
        record.update(self.extra)
        if self.meta:
            record["meta"] = self.meta
        if self.stats:
            record[STATS_KEY] = self.stats
        return record

    def chunks(self) -> list[tuple[str, list[str]]]:
        """Split ``text`` into (caption, image paths) chunks, special tokens removed.

        A trailing empty chunk after the last ``<|__dj__eoc|>`` is dropped.
        """
        parts = self.text.split(CHUNK_END)
        if len(parts) > 1 and not parts[-1].strip():
            parts = parts[:-1]
        chunks, cursor = [], 0
        for part in parts:
            n = count_image_tokens(part)
            chunks.append((clean_text(part), self.images[cursor : cursor + n]))
            cursor += n
        return chunks


def clean_text(text: str) -> str:
    """The caption a model should see: special tokens (either image spelling) removed, whitespace collapsed."""
    for token in SPECIAL_TOKENS:
        text = text.replace(token, " ")
    return " ".join(text.split())


def caption_text(caption: str, n_images: int = 1) -> str:
    """Build a single-chunk Data-Juicer ``text`` for ``n_images`` images and a caption."""
    return " ".join([IMAGE_TOKEN] * n_images + [caption, CHUNK_END])
