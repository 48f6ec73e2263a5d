"""document_minhash_deduplicator: band keys from datasketch's MinHash, any shared band a duplicate,
the same decisions whole or in chunks and across a resume."""

from __future__ import annotations

import json

import pytest
from datasketch import MinHash

from bettersynth.core.sample import Sample
from bettersynth.ops import OPERATORS
from bettersynth.ops.document_minhash_deduplicator import DocumentMinhashDeduplicator, lsh_shape
from bettersynth.ops.simhash import shingles

BASE = ("a red double decker bus drives down a busy city street past tall brick buildings while people "
        "wait at the corner under a grey sky with shops and cafes on both sides of the road")
TEXTS = [
    BASE,
    BASE.replace("grey", "cloudy"),  # one word of 33 changed: Jaccard of the 5-shingles about 0.8
    "a small brown dog sleeps on a green sofa next to an open window in a quiet sunny living room",
    BASE.upper(),  # lower-cased first
    " ".join(BASE.split()[:16]) + " and a cat on a mat looking at a bird in a tree over there",  # half the same
    "",  # no tokens: always kept
]


def make(**params) -> DocumentMinhashDeduplicator:
    return DocumentMinhashDeduplicator(DocumentMinhashDeduplicator.Config(**params))


def samples() -> list[Sample]:
    return [Sample(f"t{i}", f"<__dj__image> {t} <|__dj__eoc|>", [f"{i}.png"]) for i, t in enumerate(TEXTS)]


def jaccard(a: str, b: str, window: int = 5) -> float:
    x, y = set(shingles(a.lower().split(), window)), set(shingles(b.lower().split(), window))
    return len(x & y) / len(x | y)


def reference(texts: list[str], bands: int, rows: int) -> list:
    """Brute force over datasketch signatures: a duplicate when any band equals an earlier sample's."""
    sigs = []
    for text in texts:
        pieces = shingles(text.lower().split(), 5)
        if not pieces:
            sigs.append(None)
            continue
        m = MinHash(num_perm=256, seed=1)
        m.update_batch(pieces)
        sigs.append([tuple(m.hashvalues[b * rows:(b + 1) * rows]) for b in range(bands)])
    group, out = [], []
    for i, sig in enumerate(sigs):
        earlier = [j for j in range(i) if sig and sigs[j] and any(p == q for p, q in zip(sig, sigs[j]))]
        group.append(group[earlier[0]] if earlier else f"t{i}")
        out.append((False, f"duplicate_of={group[i]}") if earlier else (True, None))
    return out


@pytest.mark.parametrize("chunk", [None, 1, 2, 4])
def test_minhash_dedup_matches_brute_force_in_any_chunking(chunk):
    op = make()
    assert (op.bands, op.rows) == lsh_shape(0.7, 256)
    batch = samples()
    size = chunk or len(batch)
    got = [(d.keep, d.bound) for start in range(0, len(batch), size) for d in op.process(batch[start:start + size])]
    assert got == reference(TEXTS, op.bands, op.rows)
    assert got[1] == (False, "duplicate_of=t0") and jaccard(TEXTS[0], TEXTS[1]) > 0.7
    assert got[3] == (False, "duplicate_of=t0")
    assert got[2] == (True, None) and got[5] == (True, None)
    assert got[4] == (True, None) and jaccard(TEXTS[0], TEXTS[4]) < 0.5
    assert len(batch[0].stats["minhash_bands"].split(",")) == op.bands


def test_minhash_state_survives_a_resume():
    expected = [(d.keep, d.bound) for d in make().process(samples())]
    for cut in (1, 2, 4):
        first = make()
        head = first.process(samples()[:cut])
        second = make()
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert [(d.keep, d.bound) for d in head + second.process(samples()[cut:])] == expected


def test_minhash_options_and_validation():
    assert OPERATORS.get("document_minhash_deduplicator") is DocumentMinhashDeduplicator
    assert (make(num_bands=4, num_rows=8).bands, make(num_bands=4, num_rows=8).rows) == (4, 8)
    strict = make(jaccard_threshold=0.95)
    assert strict.bands * strict.rows <= 256 and strict.rows > make().rows  # a higher threshold, longer bands
    with pytest.raises(ValueError, match="num_bands and num_rows: give both or neither"):
        make(num_bands=4)
    with pytest.raises(ValueError, match=r"num_bands \* num_rows \(300\) must be <= num_permutations"):
        make(num_bands=30, num_rows=10)
    with pytest.raises(ValueError, match="tokenization"):
        make(tokenization="sentencepiece")
    assert make(ignore_pattern=r"\d+", tokenization="punctuation").tokens("A b, c 12") == ["a b", " c "]
