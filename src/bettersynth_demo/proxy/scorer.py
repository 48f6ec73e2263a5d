"""A small CLIP trained with CLIP's contrastive loss on the proxy world's clean split.

Why: a randomly initialised scorer ranks captions by chance, so the similarity
filter cannot show what it is for. Trained like CLIP (symmetric InfoNCE over
in-batch pairs, learnable temperature) on clean pairs that never include a seed
scene, it becomes a real ``CLIPModel`` checkpoint: ``image_text_similarity_filter``
loads it with ``from_pretrained`` like ``openai/clip-vit-base-patch32``, and the
LLaVA base takes its vision tower.

Example::

    result = train_scorer(paths.scorer_jsonl, texts, models / "clip", ScorerConfig(epochs=2))
    scores = pair_similarities(models / "clip", read_pairs(paths.calibration_jsonl))
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from bettersynth.train.engine import TorchEngine, optimizer_step
from bettersynth.train.schedule import cosine_lr
from bettersynth_demo.proxy.negatives import hard_negatives
from bettersynth_demo.proxy.world import read_pairs
from bettersynth_demo.tokenizers import train_clip_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerConfig:
    image_size: int = 64  # the world's images, unscaled: the sign's letters need every pixel
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 3
    heads: int = 4
    projection_dim: int = 64
    max_text_len: int = 48  # tokens; the longest world caption is ~35
    epochs: int = 24
    batch_size: int = 64  # with hard negatives, more steps beat more in-batch negatives
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup_ratio: float = 0.05
    hard_negatives: bool = True  # NegCLIP: each image's caption with one attribute swapped, as an extra negative
    seed: int = 0


@dataclass
class ScorerResult:
    out_dir: Path
    losses: list[float] = field(default_factory=list)  # mean contrastive loss per epoch
    seconds: float = 0.0


def image_processor(size: int) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def build_untrained_clip(texts: Sequence[str], config: ScorerConfig) -> tuple[CLIPModel, CLIPProcessor]:
    tokenizer = train_clip_tokenizer(texts)
    width = {"hidden_size": config.hidden_size, "intermediate_size": 4 * config.hidden_size,
             "num_hidden_layers": config.layers, "num_attention_heads": config.heads,
             "projection_dim": config.projection_dim}
    clip_config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), max_position_embeddings=config.max_text_len,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **width,
        ),
        vision_config=dict(image_size=config.image_size, patch_size=config.patch_size, **width),
        projection_dim=config.projection_dim,
    )
    torch.manual_seed(config.seed)
    return CLIPModel(clip_config), CLIPProcessor(image_processor=image_processor(config.image_size), tokenizer=tokenizer)


def _pixels(processor: CLIPProcessor, paths: Sequence[Path]) -> torch.Tensor:
    images = []
    for path in paths:
        with Image.open(path) as handle:
            images.append(handle.convert("RGB"))
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


def _tokens(processor: CLIPProcessor, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = processor.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                              return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def train_scorer(train_jsonl: Path, vocab_texts: Sequence[str], out_dir: Path,
                 config: ScorerConfig = ScorerConfig()) -> ScorerResult:
    """Train a CLIP on the clean pairs of ``train_jsonl`` and save it with ``save_pretrained``.

    ``vocab_texts`` build the tokenizer (every word the world uses, so that
    corrupted captions tokenize like clean ones).
    """
    started = time.monotonic()
    pairs = read_pairs(Path(train_jsonl))
    if len(pairs) < config.batch_size:
        raise ValueError(f"{train_jsonl}: {len(pairs)} pairs, fewer than one batch of {config.batch_size}")
    model, processor = build_untrained_clip(vocab_texts, config)
    pixels = _pixels(processor, [p for p, _ in pairs])
    tokens = _tokens(processor, [t for _, t in pairs], config.max_text_len)
    steps_per_epoch = len(pairs) // config.batch_size  # drop_last: every batch has the same negatives count
    total = steps_per_epoch * config.epochs
    warmup = max(1, round(total * config.warmup_ratio))
    engine = TorchEngine(model, list(model.parameters()), config.learning_rate, config.weight_decay, max_grad_norm=1.0)
    generator = torch.Generator().manual_seed(config.seed)
    swaps = random.Random(f"bettersynth.proxy.scorer:{config.seed}")
    result = ScorerResult(Path(out_dir))
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator)
        negatives = _tokens(processor, hard_negatives([t for _, t in pairs], swaps), config.max_text_len) \
            if config.hard_negatives else None
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            index = order[b * config.batch_size:(b + 1) * config.batch_size]
            batch = (pixels[index], {k: v[index] for k, v in tokens.items()},
                     {k: v[index] for k, v in negatives.items()} if negatives else None)
            loss, _, _ = optimizer_step(engine, [batch], cosine_lr(step, total, warmup, config.learning_rate),
                                        lambda b: _contrastive_loss(model, *b), count=lambda b: 1)  # a batch mean
            with torch.no_grad():  # CLIP clamps the temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            epoch_loss += loss
            step += 1
        result.losses.append(epoch_loss / steps_per_epoch)
        log.info("scorer epoch %d/%d: contrastive loss %.4f", epoch + 1, config.epochs, result.losses[-1])
    model.eval()
    result.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(result.out_dir)
    processor.save_pretrained(result.out_dir)
    result.seconds = time.monotonic() - started
    return result


def _contrastive_loss(model: CLIPModel, pixels: torch.Tensor, tokens: dict[str, torch.Tensor],
                      negatives: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; with ``negatives``, each image also ranks every swapped caption (NegCLIP)."""
    texts = tokens if negatives is None else {k: torch.cat([tokens[k], negatives[k]]) for k in tokens}
    image = F.normalize(_embedding(model.get_image_features(pixel_values=pixels)), dim=-1)
    text = F.normalize(_embedding(model.get_text_features(**texts)), dim=-1)
    logits = model.logit_scale.exp() * image @ text.T  # images x (captions [+ swapped captions])
    target = torch.arange(len(image))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(image)].T, target)) / 2


@torch.no_grad()
def pair_similarities(model_dir: Path, pairs: Sequence[tuple[Path, str]], batch_size: int = 256) -> list[float]:
    """Cosine of CLIP image and text embeddings per pair: the similarity filter's score."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    max_len = model.config.text_config.max_position_embeddings
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        image = model.get_image_features(pixel_values=_pixels(processor, [p for p, _ in chunk]))
        enc = processor.tokenizer([t for _, t in chunk], padding=True, truncation=True, max_length=max_len,
                                  return_tensors="pt")
        text = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        image, text = (_embedding(x) for x in (image, text))
        scores.extend(torch.nn.functional.cosine_similarity(image, text, dim=-1).tolist())
    return scores


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney U / n·m)."""
    if not positives or not negatives:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # ranks i+1..j share their mean
        rank_sum += mean_rank * sum(label for _, label in ranked[i:j])
        i = j
    n, m = len(positives), len(negatives)
    return (rank_sum - n * (n + 1) / 2) / (n * m)


def threshold_from_clean(scores: Sequence[float], keep: float = 0.95) -> float:
    """The similarity below which only ``1 - keep`` of clean held-out pairs fall (the filter's min_score)."""
    ordered = sorted(scores)
    return round(ordered[max(0, math.floor(len(ordered) * (1 - keep)))], 4)
