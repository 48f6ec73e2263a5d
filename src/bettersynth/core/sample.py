"""The in-memory form of one Data-Juicer sample.

Why: every step reads and writes the same jsonl format, so ids, meta and the
per-op stats survive a round trip unchanged, whatever step touched them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_TOKEN = "<__dj__image>"
CHUNK_END = "<|__dj__eoc|>"
STATS_KEY = "__dj__stats__"
SPECIAL_TOKENS = (IMAGE_TOKEN, CHUNK_END)


class SampleError(ValueError):
    """A sample that cannot be used; the message names the sample and the reason."""


@dataclass
class Sample:
    id: str
    text: str
    images: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

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
        )
        if text.count(IMAGE_TOKEN) != len(images):
            raise SampleError(
                f"{prefix}sample {sample_id!r}: {text.count(IMAGE_TOKEN)} image tokens "
                f"but {len(images)} images"
            )
        return sample

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "text": self.text, "images": self.images}
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
            n = part.count(IMAGE_TOKEN)
            chunks.append((clean_text(part), self.images[cursor : cursor + n]))
            cursor += n
        return chunks


def clean_text(text: str) -> str:
    """The caption a model should see: special tokens removed, whitespace collapsed."""
    for token in SPECIAL_TOKENS:
        text = text.replace(token, " ")
    return " ".join(text.split())


def caption_text(caption: str, n_images: int = 1) -> str:
    """Build a single-chunk Data-Juicer ``text`` for ``n_images`` images and a caption."""
    return " ".join([IMAGE_TOKEN] * n_images + [caption, CHUNK_END])
