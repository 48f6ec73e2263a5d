"""The proxy LLaVA base: a small LM pretrained on world text, joined to the trained scorer's vision tower.

Why: stage 1 only trains the projector, so it can teach the model something
only if the language model already speaks the world's language and the vision
tower already sees colours, shapes, counts and words. As with gemma-2b-it and
CLIP ViT-L in the real recipe, both parts are pretrained elsewhere: the LM on
the clean split's captions and on text-only questions and answers (an
"instruction-tuned" LM that has never seen an image), the tower by the
contrastive scorer. ``bettersynth.vlm.build_llava`` then joins them with a
fresh ``mlp2x_gelu`` projector, exactly as for real checkpoints.

Example::

    lm = train_language_model(captions, chats, vocab_texts, models / "lm")
    build_llava(models / "clip", lm.out_dir, models / "llava-base")
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from bettersynth.eval.textvqa import OCR_PREFIX
from bettersynth.train.engine import TorchEngine, optimizer_step
from bettersynth.train.schedule import cosine_lr
from bettersynth_demo.tokenizers import CHAT_TEMPLATE, train_lm_tokenizer

log = logging.getLogger(__name__)


# The demo template's generation prompt ends in "ASSISTANT: " (a trailing space). A byte-level
# BPE writes the space into the reply's first token ("Ġred"), so training saw "Ġred" while
# generation starts after a lone "Ġ" it never saw. Generating from "ASSISTANT:" matches training.
PROXY_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("{{ 'ASSISTANT: ' }}{% endif %}", "{{ 'ASSISTANT:' }}{% endif %}")
assert PROXY_CHAT_TEMPLATE != CHAT_TEMPLATE


@dataclass(frozen=True)
class LMConfig:
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vocab_size: int = 800  # BPE merges over the world's words
    max_length: int = 128
    epochs: int = 4  # with reading chats x4: 3 epochs answered 57 % of the other chats right, 4 epochs 65 %
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    seed: int = 0
    # Reading chats (a question with OCR tokens, answered by the word the description names) are 11 % of
    # the chats. Seen once (or twice) per epoch the LM never learnt to copy the word (text-only accuracy on
    # them 10 %, 31 %) and the VLM answered one word to every TextVQA question; four times, it copies them
    # (100 % for LM seeds 0, 1 and 2). Instruction mixes upweight a small task in the same way.
    reading_repeats: int = 4

    def __post_init__(self) -> None:
        if self.reading_repeats < 1:
            raise ValueError(f"reading_repeats must be >= 1, got {self.reading_repeats}")


@dataclass
class LMResult:
    out_dir: Path
    losses: list[float] = field(default_factory=list)  # mean token loss per epoch
    seconds: float = 0.0


def is_reading_chat(chat: dict[str, str]) -> bool:
    """A TextVQA-style chat: its question lists OCR tokens to answer from."""
    return f"\n{OCR_PREFIX}" in chat["question"]


def lm_documents(captions: Sequence[str], chats: Sequence[dict[str, str]], tokenizer,
                 reading_repeats: int = 1) -> list[str]:
    """Captions as plain documents, each also restated, and reading comprehension through the chat template.

    A chat's user turn is a description followed by a question about it: an LM
    that answers from a description in its context is what stage 1 builds on,
    where the projector learns to turn the image into such a description. The
    restated captions ("caption\ncaption") give the LM what web text gives a real
    one: the habit of repeating what its context says. Stage 1 (frozen LM, the
    caption right after the image) then rewards image tokens the LM can repeat,
    i.e. a description it can also answer questions from. Without them the
    projector learns a prompt that only triggers captions: zero-shot MMBench
    after stage 1 stayed near the base's (14-27 vs 10), against 45 vs 24 with them.
    Reading chats appear ``reading_repeats`` times (see ``LMConfig``).
    """
    documents = [f"{caption}{tokenizer.eos_token}" for caption in captions]
    documents += [f"{caption}\n{caption}{tokenizer.eos_token}" for caption in captions]
    chats = [*chats, *[chat for chat in chats if is_reading_chat(chat)] * (reading_repeats - 1)]
    for chat in chats:
        question = f"{chat['context']}\n{chat['question']}" if chat.get("context") else chat["question"]
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": chat["answer"]}]
        documents.append(tokenizer.apply_chat_template(messages, tokenize=False).rstrip())
    return documents


def train_language_model(captions: Sequence[str], chats: Sequence[dict[str, str]], vocab_texts: Sequence[str],
                         out_dir: Path, config: LMConfig = LMConfig()) -> LMResult:
    """Pretrain a small ``LlamaForCausalLM`` (next token, every token) and save it with its tokenizer."""
    started = time.monotonic()
    tokenizer = train_lm_tokenizer(vocab_texts, vocab_size=config.vocab_size)
    tokenizer.chat_template = PROXY_CHAT_TEMPLATE
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    ))
    documents = lm_documents(captions, chats, tokenizer, config.reading_repeats)
    enc = tokenizer(documents, padding="max_length", truncation=True, max_length=config.max_length,
                    return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # A fast tokenizer keeps call-time truncation/padding in tokenizer.json; the saved one must not.
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    steps_per_epoch = math.ceil(len(documents) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, round(total * config.warmup_ratio))
    engine = TorchEngine(model, list(model.parameters()), config.learning_rate, config.weight_decay, max_grad_norm=1.0)
    generator = torch.Generator().manual_seed(config.seed)
    result = LMResult(Path(out_dir))
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(documents), generator=generator)
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            index = order[b * config.batch_size:(b + 1) * config.batch_size]
            batch_ids, batch_mask = ids[index], mask[index]
            width = int(batch_mask.sum(1).max())
            batch = (batch_ids[:, :width], batch_mask[:, :width])
            loss, _, _ = optimizer_step(engine, [batch], cosine_lr(step, total, warmup, config.learning_rate),
                                        lambda b: _mean_token_loss(model, *b), count=lambda b: 1)  # a batch mean
            epoch_loss += loss
            step += 1
        result.losses.append(epoch_loss / steps_per_epoch)
        log.info("LM epoch %d/%d: token loss %.4f", epoch + 1, config.epochs, result.losses[-1])
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    result.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(result.out_dir)
    tokenizer.save_pretrained(result.out_dir)
    result.seconds = time.monotonic() - started
    return result


def _mean_token_loss(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged over the batch's non-pad tokens."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1))
