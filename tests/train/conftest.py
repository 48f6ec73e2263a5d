"""Session fixtures for the training tests: one pico LLaVA and a small captioned image set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from bettersynth_demo.models import build_tiny_llava

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle")
QUESTION = "What is in the image?"


def _caption(i: int) -> tuple[str, str, str]:
    color = list(COLORS)[i % len(COLORS)]
    shape = SHAPES[(i // len(COLORS)) % len(SHAPES)]
    return color, shape, f"a {color} {shape} on a white background"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(16):
        color, shape, _ = _caption(i)
        image = Image.new("RGB", (32 + 8 * (i % 3), 32), "white")  # some non-square, for "pad"
        draw = ImageDraw.Draw(image)
        box = (6, 6, 26, 26)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLORS[color])
        (root / "imgs").mkdir(exist_ok=True)
        image.save(root / "imgs" / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def caption_records() -> list[dict]:
    """Stage-1 records: plain prompt, the caption as the answer."""
    return [
        {"id": f"cap-{i}", "image": f"imgs/{i}.png",
         "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": _caption(i)[2]}]}
        for i in range(16)
    ]


@pytest.fixture(scope="session")
def chat_records() -> list[dict]:
    """Stage-2 records: two-turn conversations about the same images."""
    records = []
    for i in range(16):
        color, shape, caption = _caption(i)
        records.append({
            "id": f"chat-{i}", "image": f"imgs/{i}.png",
            "conversations": [
                {"from": "human", "value": f"<image>\n{QUESTION}"},
                {"from": "gpt", "value": caption},
                {"from": "human", "value": "What color is it?"},
                {"from": "gpt", "value": color},
            ],
        })
    return records


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory, caption_records, chat_records) -> Path:
    texts = [t["value"] for r in caption_records + chat_records for t in r["conversations"]]
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), texts * 4, seed=0)


@pytest.fixture(scope="session")
def processor(llava_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(llava_dir)


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory, caption_records, chat_records) -> Path:
    """A tiny HF causal LM (Llama, width 64) with its own tokenizer, saved as users have one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bettersynth_demo.tokenizers import train_lm_tokenizer

    root = tmp_path_factory.mktemp("lm")
    texts = [t["value"] for r in caption_records + chat_records for t in r["conversations"]] * 4
    torch.manual_seed(1)
    tokenizer = train_lm_tokenizer(texts, vocab_size=800)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
