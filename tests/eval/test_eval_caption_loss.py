"""Held-out caption loss: plain template, caption tokens only, equal to the model's own loss."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from bettersynth.eval import heldout_caption_loss, load_caption_records
from bettersynth.vlm.inputs import IGNORE_INDEX


@pytest.fixture(scope="module")
def captions(small_world) -> tuple[list[dict], Path]:
    seed = small_world.seed_jsonl
    return load_caption_records(seed)[:5], seed.parent


def _reference(model_dir: Path, records: list[dict], image_root: Path) -> list[tuple[float, int]]:
    """Independent: the model's own ``loss`` (mean over labelled tokens), one record at a time."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    out = []
    for record in records:
        caption = record["conversations"][1]["value"].strip()
        text = processor.image_token + caption + processor.tokenizer.eos_token
        with Image.open(image_root / record["image"]) as handle:
            image = handle.convert("RGB")
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        prefix = processor(images=[image], text=[processor.image_token], return_tensors="pt")["input_ids"].shape[1]
        labels = inputs["input_ids"].clone()
        labels[:, :prefix] = IGNORE_INDEX  # BOS and the image tokens
        with torch.no_grad():
            loss = model(**inputs, labels=labels).loss.item()
        out.append((loss, int((labels[:, 1:] != IGNORE_INDEX).sum())))
    return out


def test_eval_caption_loss_matches_model_loss(pico_models: Path, captions) -> None:
    records, root = captions
    model_dir = pico_models / "llava-base"
    result = heldout_caption_loss(model_dir, records, root, batch_size=2, device="cpu")
    reference = _reference(model_dir, records, root)
    assert [r["id"] for r in result.records] == [r["id"] for r in records]
    for mine, (loss, tokens) in zip(result.records, reference):
        assert mine["tokens"] == tokens
        assert mine["loss"] == pytest.approx(loss, rel=1e-5)
    total = sum(loss * tokens for loss, tokens in reference) / sum(t for _, t in reference)
    assert result.loss == pytest.approx(total, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total), rel=1e-5)
    assert result.samples == 5 and result.tokens == sum(t for _, t in reference)
    assert set(result.metrics) == {"caption_loss", "caption_perplexity", "caption_tokens", "caption_samples"}


def test_eval_caption_loss_ignores_batching(pico_models: Path, captions) -> None:
    records, root = captions
    one = heldout_caption_loss(pico_models / "llava-base", records, root, batch_size=1, device="cpu")
    many = heldout_caption_loss(pico_models / "llava-base", records, root, batch_size=5, device="cpu")
    assert many.loss == pytest.approx(one.loss, rel=1e-5) and many.tokens == one.tokens


def test_eval_caption_records_errors(tmp_path: Path) -> None:
    bad = tmp_path / "captions.jsonl"
    bad.write_text('{"id": "1", "text": "<__dj__image> a cat <|__dj__eoc|>", "images": ["a.png"]}\nnot json\n')
    with pytest.raises(ValueError, match="captions.jsonl:2"):
        load_caption_records(bad)
    with pytest.raises(ValueError, match="captions.txt: caption set must be"):
        load_caption_records(tmp_path / "captions.txt")
    llava = tmp_path / "captions.json"
    llava.write_text(json.dumps([{"id": "7", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a cat"}]}]))
    assert load_caption_records(llava)[0]["id"] == "7"
    with pytest.raises(ValueError, match="records: the caption set is empty"):
        heldout_caption_loss(tmp_path, [], tmp_path)
