"""The pico models: real loading path, and byte-identical when built twice from the same texts."""

from __future__ import annotations

import hashlib

import pytest
import torch
from PIL import Image

from bettersynth_demo.models import build_tiny_captioner, build_tiny_clip, build_tiny_llava
from bettersynth_demo.world import all_texts

BUILDERS = {"clip": build_tiny_clip, "captioner": build_tiny_captioner, "llava-base": build_tiny_llava}


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builds_are_deterministic(name, small_world, pico_models, tmp_path):
    again = BUILDERS[name](tmp_path / name, all_texts(small_world))
    assert _digests(again) == _digests(pico_models / name)


def test_models_load_through_the_auto_classes(pico_models):
    from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel

    image = Image.new("RGB", (64, 64), "red")
    clip = CLIPModel.from_pretrained(pico_models / "clip")
    processor = AutoProcessor.from_pretrained(pico_models / "clip")
    with torch.inference_mode():
        out = clip(**processor(text=["a red circle"], images=[image], return_tensors="pt", padding=True))
    assert out.logits_per_text.shape == (1, 1)
    for name in ("captioner", "llava-base"):
        model = AutoModelForImageTextToText.from_pretrained(pico_models / name)
        assert model.config.vision_config.image_size == 32
    llava = AutoProcessor.from_pretrained(pico_models / "llava-base")
    prompt = llava.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                       add_generation_prompt=True)
    assert prompt == "USER: <image>\nhi\nASSISTANT: "
    assert llava(images=[image], text=[prompt], return_tensors="pt").input_ids.shape[1] > 16
