"""Tokenizers trained offline on the demo world's texts.

Why: nothing may be downloaded, yet the quickstart must load every model
through the real ``AutoTokenizer``/``AutoProcessor`` path; so the tokenizers
are trained here on local text and saved exactly as ``save_pretrained`` does.
"""

from __future__ import annotations

import re
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertTokenizer, CLIPTokenizer, PreTrainedTokenizerFast

CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
LM_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")

# A minimal chat template in the style of instruction-tuned LMs: stage-2 training
# and evaluation format conversations through it, so it must be part of the tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ 'USER: ' if message['role'] == 'user' else 'ASSISTANT: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '\\n' if message['role'] == 'user' else '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}"
)


def train_clip_tokenizer(texts: Iterable[str]) -> CLIPTokenizer:
    """A byte-level BPE ``CLIPTokenizer`` (lower-cased, ``</w>`` word ends) covering every word in ``texts``.

    Merges are built word by word, left to right, in sorted word order, so the
    same texts always give the same ids (the ``tokenizers`` BPE trainer breaks
    count ties in hash order, which would change the model from run to run).
    """
    scratch = CLIPTokenizer()
    words: set[str] = set()
    for text in texts:
        normalized = scratch._tokenizer.normalizer.normalize_str(text)
        words.update(word for word, _ in scratch._tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    merges: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()
    for word in sorted(words):
        symbols = [*word[:-1], word[-1] + "</w>"]
        prefix = symbols[0]
        for symbol in symbols[1:]:
            if (prefix, symbol) not in known:
                known.add((prefix, symbol))
                merges.append((prefix, symbol))
            prefix += symbol
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    symbols = sorted({*alphabet, *(char + "</w>" for char in alphabet)})
    merged = list(dict.fromkeys(a + b for a, b in merges))
    ordered = [*CLIP_SPECIALS, *symbols, *(token for token in merged if token not in symbols)]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(dict.fromkeys(ordered))}, merges=merges)


def train_lm_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer for the tiny causal LM, with ``<image>`` and a chat template."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(LM_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
    )


def word_vocab_tokenizer(texts: Iterable[str]) -> BertTokenizer:
    """A ``BertTokenizer`` whose vocabulary is every lower-cased word and symbol in ``texts``."""
    words = sorted({token for text in texts for token in re.findall(r"\w+|[^\w\s]", text.lower())})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(specials + words)})
