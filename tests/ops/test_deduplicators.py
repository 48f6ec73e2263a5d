"""Deduplicators: hashes against direct computations, first occurrence kept, and the same
decisions whether the samples come all at once or in chunks."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from ops_testutil import write_jsonl
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.score_cache import ScoreCache
from bettersynth.ops import OPERATORS, OpContext
from bettersynth.ops.document_deduplicator import DocumentDeduplicator
from bettersynth.ops.document_simhash_deduplicator import (
    DocumentSimhashDeduplicator,
    split_on_punctuation,
)
from bettersynth.ops.image_deduplicator import ImageDeduplicator
from bettersynth.ops.simhash import SimhashIndex, hamming


def decide(op, samples: list[Sample], chunk: int | None = None) -> list:
    """Decisions in input order, the samples handed over whole or in successive chunks of ``chunk``."""
    size = chunk or len(samples)
    return [d for start in range(0, len(samples), size) for d in op.process(samples[start : start + size])]


def verdicts(decisions) -> list:
    return [d.reason if isinstance(d, Failure) else (d.keep, d.bound) for d in decisions]


# --- image_deduplicator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, small_world) -> Path:
    """Seed images, a JPEG re-encoding of the first (same picture, other bytes), a corrupt file."""
    from bettersynth.data.jsonl import read_jsonl

    root = tmp_path_factory.mktemp("dedup-images")
    seed = [s for s in read_jsonl(small_world.seed_jsonl) if isinstance(s, Sample)][:4]
    for i, sample in enumerate(seed):
        Image.open(small_world.seed_jsonl.parent / sample.images[0]).convert("RGB").save(root / f"{i}.png")
    Image.open(root / "0.png").save(root / "0-copy.jpg", quality=90)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def image_op(root: Path, cache=None, **params) -> ImageDeduplicator:
    context = OpContext(engine=Engine(EngineSettings(batch_size=2), dataset_root=root), score_cache=cache)
    return ImageDeduplicator(ImageDeduplicator.Config(**params), context)


def image_samples() -> list[Sample]:
    one = "<__dj__image> a caption <|__dj__eoc|>"
    return [
        Sample("a", one, ["0.png"]),
        Sample("b", one, ["1.png"]),
        Sample("no-image", "just text", []),
        Sample("a-copy", "<__dj__image> another caption <|__dj__eoc|>", ["0-copy.jpg"]),
        Sample("broken", one, ["bad.png"]),
        Sample("b-again", one, ["1.png"]),
        Sample("pair", "<__dj__image> <__dj__image> two <|__dj__eoc|>", ["2.png", "3.png"]),
        Sample("pair-again", "<__dj__image> <__dj__image> two <|__dj__eoc|>", ["2.png", "3.png"]),
        Sample("pair-swapped", "<__dj__image> <__dj__image> two <|__dj__eoc|>", ["3.png", "2.png"]),
    ]


@pytest.mark.parametrize("method", ["phash", "dhash", "whash", "ahash"])
def test_image_hashes_are_imagehash_of_each_image(pictures, method):
    import imagehash

    function = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash, "ahash": imagehash.average_hash}[method]
    stats = image_op(pictures, method=method).compute_stats(image_samples())
    assert stats[0] == str(function(Image.open(pictures / "0.png").convert("RGB")))
    assert stats[6] == "".join(str(function(Image.open(pictures / p).convert("RGB"))) for p in ("2.png", "3.png"))
    assert stats[2] == "" and isinstance(stats[4], Failure) and "bad.png" in stats[4].reason


@pytest.mark.parametrize("chunks", [None, 1, 2, 4], ids=["whole", "ones", "twos", "fours"])
def test_image_dedup_keeps_first_occurrence_in_any_chunking(pictures, chunks):
    got = verdicts(decide(image_op(pictures), image_samples(), chunks))
    assert got[:4] == [(True, None), (True, None), (True, None), (False, "duplicate_of=a")]  # JPEG copy
    assert "bad.png" in got[4]  # rejected, the rest untouched
    assert got[5:] == [(False, "duplicate_of=b"), (True, None), (False, "duplicate_of=pair"), (True, None)]


def test_image_dedup_consider_text_state_per_instance_and_cache(pictures, tmp_path):
    got = verdicts(decide(image_op(pictures, consider_text=True), image_samples()))
    assert got[3] == (True, None)  # same picture, other caption
    assert got[5] == (False, "duplicate_of=b")
    cache = ScoreCache(tmp_path / "cache")
    first = image_op(pictures, cache=cache)
    decide(first, image_samples())
    second = image_op(pictures, cache=cache)  # a new run: nothing remembered, hashes from the cache
    assert verdicts(decide(second, image_samples()[3:4])) == [(True, None)]
    assert second.cache_hits == 1 and second.cache_misses == 0


def test_image_dedup_through_the_runner(pictures, tmp_path):
    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.runner import run_recipe

    records = [s.to_json() for s in image_samples()]
    write_jsonl(tmp_path / "in.jsonl", records)
    recipe = Recipe.from_dict({"process": [{"image_deduplicator": {"method": "phash"}}]})
    report = run_recipe(recipe, tmp_path / "in.jsonl", pictures, tmp_path / "out", num_workers=0, cache_dir=tmp_path / "c", chunk_size=2)
    assert (report.n_in, report.kept, report.filtered, report.rejected) == (9, 5, 3, 1)
    outcomes = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "outcomes.jsonl").read_text().splitlines())}
    assert outcomes["b-again"]["bound"] == "duplicate_of=b" and outcomes["b-again"]["op"] == "image_deduplicator"


def resumed(make, samples: list[Sample], cut: int) -> list:
    """Decide ``samples[:cut]``, checkpoint the op's state as JSON, go on with a fresh op."""
    first = make()
    head = first.process(samples[:cut])
    second = make()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    return verdicts(head + second.process(samples[cut:]))


def test_image_dedup_state_survives_a_resume(pictures):
    expected = verdicts(decide(image_op(pictures), image_samples()))
    for cut in (1, 4, 6):
        assert resumed(lambda: image_op(pictures), image_samples(), cut) == expected


# --- document_simhash_deduplicator ----------------------------------------------------------


def reference_simhash(text: str, window: int = 6) -> int:
    """Word shingles (lower-cased, split on spaces), md5 feature hashes, bitwise majority vote."""
    words = text.lower().split()
    grams = [words] if len(words) <= window else [words[i : i + window] for i in range(len(words) - window + 1)]
    feats = [int.from_bytes(hashlib.md5(" ".join(g).encode()).digest()[:8], "big") for g in grams]
    return sum(1 << b for b in range(64) if sum(1 if (f >> b) & 1 else -1 for f in feats) > 0)


def captions(small_world) -> list[str]:
    from bettersynth_demo.world import all_texts

    texts = [t for t in dict.fromkeys(all_texts(small_world)) if len(t.split()) >= 12][:10]
    long = " and ".join(texts[:3])
    rng = random.Random(0)
    edited = long.split()
    edited[-2] = "purple" if edited[-2] != "purple" else "green"  # one word changed near the end
    return [texts[0], long, texts[1], " ".join(edited), texts[0].upper(), texts[2], *texts[3:], rng.choice(texts)]


def reference_decisions(hashes: list[int], ids: list[str], k: int) -> list:
    """Brute force: a duplicate when within k bits of any earlier sample; named after the kept
    sample of the earliest such sample's group."""
    group: list[str] = []
    out = []
    for i, h in enumerate(hashes):
        earlier = [j for j in range(i) if hamming(h, hashes[j]) <= k]
        group.append(group[earlier[0]] if earlier else ids[i])
        out.append((False, f"duplicate_of={group[i]}") if earlier else (True, None))
    return out


@pytest.mark.parametrize("chunks", [None, 1, 3, 5], ids=["whole", "ones", "threes", "fives"])
def test_simhash_dedup_matches_brute_force_in_any_chunking(small_world, chunks):
    texts = captions(small_world)
    samples = [Sample(f"t{i}", f"<__dj__image> {t} <|__dj__eoc|>", [f"{i}.png"]) for i, t in enumerate(texts)]
    op = DocumentSimhashDeduplicator(DocumentSimhashDeduplicator.Config())
    got = verdicts(decide(op, samples, chunks))
    hashes = [reference_simhash(t) for t in texts]
    assert [int(s.stats["simhash"]) for s in samples] == hashes
    assert got == reference_decisions(hashes, [s.id for s in samples], 4)
    assert got[3] == (False, "duplicate_of=t1")  # near duplicate: one word edited
    assert got[4] == (False, "duplicate_of=t0")  # lower-cased before hashing
    assert 0 < hamming(hashes[1], hashes[3]) <= 4


def test_simhash_state_survives_a_resume(small_world):
    samples = [Sample(f"t{i}", t) for i, t in enumerate(captions(small_world))]

    def make() -> DocumentSimhashDeduplicator:
        return DocumentSimhashDeduplicator(DocumentSimhashDeduplicator.Config())

    expected = verdicts(decide(make(), samples))
    for cut in (2, 4, 7):
        assert resumed(make, samples, cut) == expected


def test_simhash_options_and_validation():
    op = DocumentSimhashDeduplicator(DocumentSimhashDeduplicator.Config(tokenization="punctuation", ignore_pattern=r"\d+"))
    assert op.tokens("A b, c.d 12") == ["a b", " c", "d "]
    assert split_on_punctuation("x,y") == ["x", "y"]
    short = DocumentSimhashDeduplicator(DocumentSimhashDeduplicator.Config())
    assert short.simhash("two words") != short.simhash("other words") != 0  # short texts are not all 0
    char = DocumentSimhashDeduplicator(DocumentSimhashDeduplicator.Config(tokenization="character", window_size=3))
    assert char.simhash("abcd") == reference_char_simhash("abcd", 3)
    with pytest.raises(ValueError, match="hamming_distance"):
        DocumentSimhashDeduplicator.Config(num_blocks=4, hamming_distance=4)
    with pytest.raises(ValueError, match="ignore_pattern"):
        DocumentSimhashDeduplicator.Config(ignore_pattern="(")
    assert OPERATORS.get("document_simhash_deduplicator") is DocumentSimhashDeduplicator


def reference_char_simhash(text: str, window: int) -> int:
    feats = [int.from_bytes(hashlib.md5(text[i : i + window].encode()).digest()[:8], "big") for i in range(len(text) - window + 1)]
    return sum(1 << b for b in range(64) if sum(1 if (f >> b) & 1 else -1 for f in feats) > 0)


def test_simhash_index_finds_exactly_the_near_hashes():
    rng = random.Random(1)
    stored = [rng.getrandbits(64) for _ in range(300)]
    stored += [h ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for h in stored[:50]]  # planted neighbours
    index = SimhashIndex(num_blocks=6, max_distance=4)
    for h in stored:
        index.add(h)
    for query in stored[:80] + [rng.getrandbits(64) for _ in range(20)]:
        expected = [h for h in dict.fromkeys(stored) if hamming(query, h) <= 4]
        assert sorted(index.near(query)) == sorted(expected)


# --- document_deduplicator ------------------------------------------------------------------


def test_document_dedup_exact_md5_with_options():
    texts = ["A red bus. <|__dj__eoc|>", "a red bus.", "A red bus 2!", "A red bus. <|__dj__eoc|>"]
    samples = [Sample(f"d{i}", t) for i, t in enumerate(texts)]
    plain = DocumentDeduplicator(DocumentDeduplicator.Config())
    assert verdicts(decide(plain, samples, 3)) == [(True, None), (True, None), (True, None), (False, "duplicate_of=d0")]
    assert samples[1].stats["text_md5"] == hashlib.md5(b"a red bus.").hexdigest()
    loose = DocumentDeduplicator(DocumentDeduplicator.Config(lowercase=True, ignore_non_character=True))
    fresh = [Sample(s.id, s.text) for s in samples]
    assert [d.keep for d in decide(loose, fresh)] == [True, False, False, False]
    assert OPERATORS.get("document_deduplicator") is DocumentDeduplicator


def _near_copy(pictures: Path) -> str:
    """0.png cropped by two pixels a side and scaled back: the same picture, a few hash bits apart."""
    image = Image.open(pictures / "0.png").convert("RGB")
    image.crop((2, 2, image.width - 2, image.height - 2)).resize(image.size).save(pictures / "0-near.png")
    return "0-near.png"


def test_image_dedup_with_a_hamming_distance_drops_near_copies_too(pictures):
    import imagehash

    near = _near_copy(pictures)
    phash = {name: imagehash.phash(Image.open(pictures / name).convert("RGB")) for name in ("0.png", near, "1.png", "2.png")}
    distance = phash["0.png"] - phash[near]
    assert 0 < distance < min(phash["0.png"] - phash["1.png"], phash["0.png"] - phash["2.png"])
    samples = [*image_samples(), Sample("a-near", "<__dj__image> a crop <|__dj__eoc|>", [near])]
    exact = verdicts(decide(image_op(pictures), samples))
    assert exact[-1] == (True, None)  # Data-Juicer's equality misses it
    for chunks in (None, 1, 3):
        got = verdicts(decide(image_op(pictures, hamming_distance=distance), samples, chunks))
        assert got[-1] == (False, "duplicate_of=a")
        assert got[:-1] == exact[:-1]  # everything else as before, pairs still exact
    for cut in (1, 5, 9):
        assert resumed(lambda: image_op(pictures, hamming_distance=distance), samples, cut) == got


def test_image_dedup_near_matching_is_for_images_alone():
    with pytest.raises(ValueError, match="consider_text"):
        ImageDeduplicator.Config(hamming_distance=4, consider_text=True)
