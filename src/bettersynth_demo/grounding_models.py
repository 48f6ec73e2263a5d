"""A pico OWL-ViT detector built offline, saved as ``save_pretrained`` writes it.

Why: ``phrase_grounding_recall_filter`` must be tested through the real
``OwlViTForObjectDetection`` / ``OwlViTProcessor`` loading path without the
hub. The tokenizer keeps two OWL-ViT conventions the model relies on: the
start and end tokens have the highest ids (the text tower pools at the
arg-max id, and a query whose first id is 0 counts as padding), and queries
are padded with ``!`` (id 0) to 16 tokens.

Example::

    owlvit_dir = build_tiny_owlvit(models / "owlvit", all_texts(world))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    CLIPTokenizer,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessor,
    OwlViTProcessor,
)

from bettersynth_demo.models import IMAGE_SIZE, PATCH_SIZE
from bettersynth_demo.tokenizers import CLIP_SPECIALS, train_clip_tokenizer

MAX_QUERY_TOKENS = 16  # OWL-ViT's text length
HEAD_STD = 0.3  # detection-head weight scale: boxes and scores spread, neither saturated nor all alike


def owlvit_tokenizer(texts: Sequence[str]) -> CLIPTokenizer:
    """The demo CLIP tokenizer with OWL-ViT's id layout: ``!`` first, start/end tokens last."""
    base = train_clip_tokenizer(texts)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(base.backend_tokenizer.to_str())["model"]["merges"]]
    by_id = sorted(base.get_vocab().items(), key=lambda item: item[1])
    order = [token for token, _ in by_id if token not in CLIP_SPECIALS] + list(CLIP_SPECIALS)
    if order[0] != "!":
        raise ValueError(f"expected '!' as the first symbol of the byte alphabet, got {order[0]!r}")
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(order)}, merges=merges, pad_token="!", model_max_length=MAX_QUERY_TOKENS
    )


def build_tiny_owlvit(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``OwlViTForObjectDetection`` + ``OwlViTProcessor`` (the phrase grounder)."""
    torch.manual_seed(seed)
    tokenizer = owlvit_tokenizer(texts)
    config = OwlViTConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": MAX_QUERY_TOKENS,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
        },
        projection_dim=32,
    )
    model = OwlViTForObjectDetection(config)
    _spread_heads(model, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    OwlViTProcessor(image_processor=OwlViTImageProcessor(size=size, crop_size=size), tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def _spread_heads(model: OwlViTForObjectDetection, seed: int) -> None:
    """Re-draw the box and class heads at ``HEAD_STD``.

    At pico size the stock initialisation leaves them at std ~1, so every box
    saturates to the same degenerate shape and every score to ~0; the filter's
    confidence, area and overlap rules would then never be exercised.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.box_head, model.class_head):
            for module in head.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, HEAD_STD, generator=generator)
                    module.bias.zero_()
