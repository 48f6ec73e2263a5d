"""LLaVA records as tokenized training examples, with the loss only where the model should learn.

Why: what a stage learns is decided by its labels. Stage 1 (align) uses the
*plain* template, ``<image>caption</s>``, labelling only the caption and its
end token; stage 2 (finetune) formats the conversation with the model's own
chat template and labels only the assistant replies (each with its end token).
Prompts, image tokens, BOS and padding carry ``-100``.

Labels are found by character spans: the prompt text is rendered, the spans
of the label text are located in it, and every token whose offsets overlap a
span is labelled. The processor then expands each ``<image>`` into the
vision tower's patch tokens; the labels follow that expansion.

A record that cannot be encoded raises ``LlavaRecordError`` naming its id:
training refuses to drop data silently, so every sample is either trained on
or reported; filter bad samples before training. Bad shapes, duplicate ids and
missing image files fail when the dataset is built; unreadable images and
image tokens cut by ``max_length`` fail when the example is loaded.

Example::

    dataset = LlavaDataset(records, image_root, processor, template="plain", max_length=2048)
    loader = DataLoader(dataset, batch_size=4, collate_fn=LlavaCollator(processor.tokenizer.pad_token_id))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from bettersynth.core.registry import Registry
from bettersynth.data.llava import GPT, LLAVA_IMAGE_TOKEN, LlavaRecordError, validate_record

IGNORE_INDEX = -100  # label value the loss skips (PyTorch cross_entropy's default ignore_index)
Span = tuple[int, int]  # [start, end) character offsets of label text in the prompt


@dataclass(frozen=True)
class Prompt:
    """The text to tokenize and the character spans whose tokens are labelled."""

    text: str
    label_spans: list[Span]
    add_special_tokens: bool = True  # False when the template already writes BOS itself


PromptTemplate = Callable[[dict, Any], Prompt]
TEMPLATES: Registry[PromptTemplate] = Registry("prompt template")


@TEMPLATES.register("plain")
def plain_prompt(record: dict, processor: Any) -> Prompt:
    """``<image>caption</s>``: LLaVA's pretraining template; the human turn is ignored."""
    tokenizer = processor.tokenizer
    if tokenizer.eos_token is None:
        raise ValueError("the plain template needs a tokenizer with an eos_token")
    turns = record["conversations"]
    if len(turns) != 2:
        raise LlavaRecordError(f"record {record['id']!r}: the plain template takes one human/gpt pair")
    image = processor.image_token if record.get("image") else ""
    prefix = image
    text = prefix + turns[1]["value"].strip() + tokenizer.eos_token
    return Prompt(text, [(len(prefix), len(text))])


@TEMPLATES.register("chat")
def chat_prompt(record: dict, processor: Any) -> Prompt:
    """The conversation through the processor's chat template; assistant replies labelled."""
    messages = [_message(turn) for turn in record["conversations"]]

    def render(upto: int, generation_prompt: bool = False) -> str:
        return processor.apply_chat_template(
            messages[:upto], tokenize=False, add_generation_prompt=generation_prompt
        )

    text = render(len(messages))
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head, with_reply = render(i, generation_prompt=True), render(i + 1)
        if not (text.startswith(with_reply) and with_reply.startswith(head)):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        # The reply and its end token, not the whitespace the template puts after them.
        spans.append((len(head), len(with_reply.rstrip())))
    bos = processor.tokenizer.bos_token
    return Prompt(text, spans, add_special_tokens=not (bos and text.startswith(bos)))


def _message(turn: dict) -> dict:
    role = "assistant" if turn["from"] == GPT else "user"
    content: list[dict] = []
    for i, piece in enumerate(turn["value"].split(LLAVA_IMAGE_TOKEN)):
        if i:
            content.append({"type": "image"})
        if piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    return {"role": role, "content": content}


def encode(
    prompt: Prompt, image: Image.Image | None, processor: Any, max_length: int, record_id: str
) -> dict[str, Any]:
    """Token ids, labels (``-100`` outside the label spans) and pixel values for one prompt."""
    tokenizer = processor.tokenizer
    enc = tokenizer(prompt.text, return_offsets_mapping=True, add_special_tokens=prompt.add_special_tokens)
    labels = [
        token if any(s < span_end and e > span_start and e > s for span_start, span_end in prompt.label_spans)
        else IGNORE_INDEX
        for token, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    inputs = processor(
        text=[prompt.text], images=[image] if image is not None else None,
        add_special_tokens=prompt.add_special_tokens, return_tensors="pt",
    )
    input_ids = inputs["input_ids"][0]
    labels = _expand_image_labels(enc["input_ids"], labels, input_ids.tolist(), processor, record_id)
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    n_image_tokens = int((input_ids == image_id).sum())
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if int((input_ids == image_id).sum()) != n_image_tokens:
        raise LlavaRecordError(
            f"record {record_id!r}: max_length {max_length} cuts into its {n_image_tokens} image tokens"
        )
    return {
        "id": record_id,
        "input_ids": input_ids,
        "labels": labels,
        "pixel_values": inputs["pixel_values"][0] if image is not None else None,
    }


def _expand_image_labels(
    ids: list[int], labels: list[int], expanded: list[int], processor: Any, record_id: str
) -> torch.Tensor:
    """Repeat each image token's ``-100`` as often as the processor expanded that token."""
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    n_images = ids.count(image_id)
    per_image = expanded.count(image_id) // n_images if n_images else 0
    out: list[int] = []
    for token, label in zip(ids, labels):
        out.extend([IGNORE_INDEX] * per_image if token == image_id else [label])
    text_only = [t for t in ids if t != image_id]
    if len(out) != len(expanded) or text_only != [t for t in expanded if t != image_id]:
        raise ValueError(f"record {record_id!r}: the processor's tokens disagree with the tokenizer's")
    return torch.tensor(out, dtype=torch.long)


class LlavaDataset(Dataset):
    """Tokenized examples from LLaVA records; images are read lazily from ``image_root``."""

    def __init__(
        self,
        records: Sequence[dict],
        image_root: Path,
        processor: Any,
        template: Literal["plain", "chat"],
        max_length: int,
        image_aspect_ratio: Literal["crop", "pad"] = "crop",
    ) -> None:
        ids = [validate_record(r) for r in records]  # fail before training starts, not mid-epoch
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise LlavaRecordError(f"duplicate record ids: {duplicates[:5]}")
        self.records = list(records)
        self.image_root = Path(image_root)
        missing = [
            str(r["id"]) for r in self.records if r.get("image") and not (self.image_root / r["image"]).is_file()
        ]
        if missing:  # the common failure, caught before any training time is spent
            raise LlavaRecordError(
                f"{len(missing)} records name images missing under {str(self.image_root)!r}, e.g. {missing[:5]}"
            )
        self.processor = processor
        self.template = TEMPLATES.get(template)
        self.max_length = max_length
        self.image_aspect_ratio = image_aspect_ratio

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        record_id = str(record["id"])
        image = self._image(record) if record.get("image") else None
        return encode(self.template(record, self.processor), image, self.processor, self.max_length, record_id)

    def _image(self, record: dict) -> Image.Image:
        path = self.image_root / record["image"]
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
        except (OSError, ValueError) as exc:  # missing, truncated or not an image
            raise LlavaRecordError(f"record {record['id']!r}: cannot read image {str(path)!r}: {exc}") from exc
        if self.image_aspect_ratio == "pad":
            image = pad_to_square(image, self.processor.image_processor.image_mean)
        return image


def pad_to_square(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """Pad to a square with the mean colour (LLaVA's ``image_aspect_ratio pad``), keeping all content."""
    side = max(image.size)
    fill = tuple(int(round(255 * m)) for m in mean)
    return ImageOps.pad(image, (side, side), color=fill, centering=(0.5, 0.5))


@dataclass
class LlavaCollator:
    """Pads a list of examples into a batch (right padding for training: ``-100`` labels on pads)."""

    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            cols = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            input_ids[row, cols] = example["input_ids"]
            labels[row, cols] = example["labels"]
            attention_mask[row, cols] = 1
        pixels = [e["pixel_values"] for e in examples if e["pixel_values"] is not None]
        return {
            "ids": [e["id"] for e in examples],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.stack(pixels) if pixels else None,
        }


def format_prompt(processor, prompt: str) -> str:
    """The user turn through the chat template if there is one, else ``<image>\\n`` + prompt."""
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return f"{getattr(processor, 'image_token', '<image>')}\n{prompt}"
