"""llm_perplexity_filter against perplexities computed by hand from the causal LM's logits."""

from __future__ import annotations

import math

import pytest
import torch

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.score_cache import ScoreCache
from bettersynth.ops import OPERATORS, OpContext
from bettersynth.ops.llm_perplexity_filter import LLMPerplexityFilter

TEXTS = [
    "a simple picture showing two red circles on the left",
    "a blue square",
    "this small image contains an orange triangle at the top, drawn in a flat style and the word CAT written on a sign",
    "in this little drawing we can see three green squares in the center",
]


def samples() -> list[Sample]:
    return [Sample(f"s{i}", f"<__dj__image> {t} <|__dj__eoc|>", [f"img/{i}.png"]) for i, t in enumerate(TEXTS)]


def hand_perplexity(model_dir, text: str, query: str = "") -> float:
    """One unpadded forward per text; NLL gathered from log_softmax; Data-Juicer's response
    rule: the last len(tokens(response)) - 1 (BOS) tokens of the full text are scored."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    full = f"{query} {text}".strip()
    ids = tokenizer(full, return_tensors="pt")["input_ids"]
    n_response = len(tokenizer(text)["input_ids"]) - 1
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    targets = ids[0, 1:]
    nll = -logp[:-1].gather(1, targets[:, None])[:, 0]
    return math.exp(nll[-n_response:].mean().item())


def make_op(model_dir, batch_size=3, cache=None, **params) -> LLMPerplexityFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=model_dir)
    config = LLMPerplexityFilter.Config(hf_model=model_dir.name, **params)
    return LLMPerplexityFilter(config, OpContext(engine=engine, model_root=model_dir.parent, score_cache=cache))


def test_llm_perplexity_matches_hand_computation_across_padded_batches(pico_causal_lm):
    op = make_op(pico_causal_lm, batch_size=3, min_score=0, max_score=1e9)
    stats = op.compute_stats(samples())
    expected = [hand_perplexity(pico_causal_lm, t) for t in TEXTS]
    assert stats == pytest.approx(expected, rel=1e-4)
    assert len({round(s, 3) for s in stats}) == len(stats)  # a real spread, not a constant


def test_llm_perplexity_query_template_scores_only_the_response(pico_causal_lm):
    query = "Describe the picture:"
    op = make_op(pico_causal_lm, min_score=0, max_score=1e9, query_template=query)
    stats = op.compute_stats(samples()[:2])
    assert stats == pytest.approx([hand_perplexity(pico_causal_lm, t, query) for t in TEXTS[:2]], rel=1e-4)
    plain = make_op(pico_causal_lm, min_score=0, max_score=1e9).compute_stats(samples()[:2])
    assert stats != pytest.approx(plain, rel=1e-3)  # the query conditions the response


def test_llm_perplexity_closed_bounds_and_cache(pico_causal_lm, tmp_path):
    cache = ScoreCache(tmp_path / "cache")
    scores = make_op(pico_causal_lm, min_score=0, max_score=1e9).compute_stats(samples())
    low, high = sorted(scores)[1], sorted(scores)[2]
    op = make_op(pico_causal_lm, cache=cache, min_score=low, max_score=high)
    decisions = op.process(samples())
    kept = [d.keep for d in decisions]
    assert kept == [low <= s <= high for s in scores] and sum(kept) == 2  # both bounds inclusive
    dropped = [d for d in decisions if not d.keep]
    assert {d.bound.split("=")[0] for d in dropped} == {"min_score", "max_score"}
    assert op.cache_misses == 4
    rerun = make_op(pico_causal_lm, cache=cache, min_score=0, max_score=high)
    rerun.process(samples())
    assert (rerun.cache_hits, rerun.cache_misses) == (4, 0)  # a threshold change recomputes nothing


def test_llm_perplexity_template_error_rejects_only_that_sample(pico_causal_lm):
    batch = samples()
    batch[1].meta["prompt"] = "Caption:"
    op = make_op(pico_causal_lm, min_score=0, max_score=1e9, query_template="{prompt}")
    stats = op.compute_stats(batch)
    assert isinstance(stats[0], Failure) and "s0" in stats[0].reason and "prompt" in stats[0].reason
    assert stats[1] == pytest.approx(hand_perplexity(pico_causal_lm, TEXTS[1], "Caption:"), rel=1e-4)


def test_llm_perplexity_config_is_validated():
    assert OPERATORS.get("llm_perplexity_filter") is LLMPerplexityFilter
    with pytest.raises(ValueError, match="trust_remote_code"):
        LLMPerplexityFilter.Config(model_params={"trust_remote_code": True})
    with pytest.raises(ValueError, match="min_score"):
        LLMPerplexityFilter.Config(min_score=5, max_score=2)
