"""Pico models built offline once per session (no downloads)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from bettersynth.engine import clear_model_cache

BLIP_WORDS = "a an the red blue bus dog cat on street photo of picture with tree sky".split()


def _make_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


def _make_blip(path: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + BLIP_WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(path / "vocab.txt"), bos_token="[DEC]")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=16, max_position_embeddings=64,
                         bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    """A model root holding ``clip/`` (tiny CLIPModel) and ``blip/`` (tiny BLIP captioner)."""
    root = tmp_path_factory.mktemp("models")
    _make_clip(root / "clip")
    _make_blip(root / "blip")
    yield root
    clear_model_cache()


@pytest.fixture(autouse=True)
def isolated_score_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own score cache folder (never the user's)."""
    folder = tmp_path / "score-cache"
    monkeypatch.setenv("BETTERSYNTH_CACHE_DIR", str(folder))
    return folder
