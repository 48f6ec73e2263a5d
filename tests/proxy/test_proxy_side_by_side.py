"""Scorer and LM trained side by side, each in a process of its own, compute exactly what they would here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth.demo.proxy.base_model import LMConfig, train_language_model
from bettersynth.demo.proxy.scorer import ScorerConfig, train_scorer
from bettersynth.demo.proxy.side_by_side import side_by_side
from bettersynth.demo.proxy.world import pretraining_corpus, pretraining_texts

SCORER = ScorerConfig(hidden_size=32, layers=1, heads=2, projection_dim=32, epochs=2, batch_size=16)
LM = LMConfig(hidden_size=32, layers=1, heads=2, kv_heads=1, vocab_size=300, epochs=1, batch_size=16)


def test_side_by_side_gives_the_in_process_losses_in_order(proxy, tmp_path: Path) -> None:
    captions, chats = pretraining_corpus(proxy)
    vocab = pretraining_texts(captions, chats)
    scorer_args = (proxy.scorer_jsonl, vocab, tmp_path / "here" / "clip", SCORER)
    lm_args = (captions, chats, vocab, tmp_path / "here" / "lm", LM)
    here = [train_scorer(*scorer_args), train_language_model(*lm_args)]
    apart = side_by_side([(train_scorer, (proxy.scorer_jsonl, vocab, tmp_path / "apart" / "clip", SCORER)),
                          (train_language_model, (captions, chats, vocab, tmp_path / "apart" / "lm", LM))])
    assert [r.losses for r in apart] == [r.losses for r in here]  # bit for bit: same thread count, same numbers
    assert (tmp_path / "apart" / "clip" / "config.json").is_file() and (tmp_path / "apart" / "lm" / "config.json").is_file()


def test_an_error_in_a_job_reaches_the_caller(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.jsonl"
    with pytest.raises(FileNotFoundError, match="no-such.jsonl"):
        side_by_side([(train_scorer, (missing, ["a b"], tmp_path / "clip", SCORER))])
