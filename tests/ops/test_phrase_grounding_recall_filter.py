"""phrase_grounding_recall_filter against Data-Juicer's per-chunk computation: one unbatched
OWL-ViT call per image with only its own phrases, the processor's own post-processing, and
the hit rules written out again here."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from ops_testutil import write_image
from PIL import Image, ImageOps

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.ops import OPERATORS, OpContext
from bettersynth.ops.noun_phrases import NltkDataError, load_tagger, noun_phrases
from bettersynth.ops.phrase_grounding_recall_filter import PhraseGroundingRecallFilter

CAPTIONS = [
    "a simple picture showing two red circles on the left",
    "an illustration of an orange triangle placed on a plain light grey background, with a sign that reads CAT",
    "in this little drawing we can see a blue square at the top and three green triangles in the center",
]


@pytest.fixture(scope="module")
def grounding(tmp_path_factory, small_world) -> dict[str, Path]:
    from bettersynth_demo.grounding_models import build_tiny_owlvit
    from bettersynth_demo.pos_tagger import build_demo_pos_tagger
    from bettersynth_demo.world import all_texts

    root = tmp_path_factory.mktemp("grounding")
    build_tiny_owlvit(root / "models" / "owlvit", all_texts(small_world) + CAPTIONS)
    build_demo_pos_tagger(root / "nltk_data")
    for i in range(6):
        write_image(root / "data" / "imgs" / f"{i}.png", seed=i, size=(40 + 8 * i, 64 - 4 * i))
    (root / "data" / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return {"models": root / "models", "nltk": root / "nltk_data", "data": root / "data"}


@pytest.fixture(scope="module")
def default_stats(grounding) -> list:
    return make_op(grounding, min_recall=0.0).compute_stats(samples())


def make_op(g, batch_size=3, **params) -> PhraseGroundingRecallFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=g["data"])
    config = PhraseGroundingRecallFilter.Config(hf_owlvit="owlvit", nltk_data=str(g["nltk"]), **params)
    return PhraseGroundingRecallFilter(config, OpContext(engine=engine, model_root=g["models"]))


def reference_phrases(text: str, nltk_data: Path) -> list[str]:
    """NLTK's own pipeline: word_tokenize (one line), the tagger, GLIP's grammar, DJ's punctuation strip."""
    import nltk

    tagged = load_tagger(nltk_data).tag(nltk.word_tokenize(text.lower(), preserve_line=True))
    tree = nltk.RegexpParser("NP: {<DT>?<JJ.*>*<NN.*>+}").parse(tagged)
    phrases = [" ".join(w for w, _ in t.leaves()).replace(",", "").strip() for t in tree.subtrees() if t.label() == "NP"]
    return list(dict.fromkeys(p for p in phrases if p))


@functools.lru_cache(maxsize=1)
def reference_model(folder: Path):
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

    return OwlViTProcessor.from_pretrained(folder), OwlViTForObjectDetection.from_pretrained(folder).eval()


def reference_recall(g, image_rel: str, phrases: list[str], conf_thr=0.0, iou_thr=0.5, area_thr=0.95, hflip=False, vflip=False) -> float:
    processor, model = reference_model(g["models"] / "owlvit")
    image = Image.open(g["data"] / image_rel).convert("RGB")
    image = ImageOps.mirror(image) if hflip else image
    image = ImageOps.flip(image) if vflip else image
    with torch.no_grad():
        outputs = model(**processor(text=[phrases], images=[image], return_tensors="pt", truncation=True))
    result = processor.post_process_grounded_object_detection(outputs, threshold=conf_thr, target_sizes=[image.size[::-1]])[0]
    order = result["scores"].argsort(descending=True)[: len(phrases)]
    hit: dict[int, list[float]] = {}
    for box, label in zip(result["boxes"][order].tolist(), result["labels"][order].tolist()):
        x0, y0, x1, y1 = box
        if label in hit or (x1 - x0) * (y1 - y0) / (image.width * image.height) > area_thr:
            continue
        if any(_iou(box, other) > iou_thr for other in hit.values()):
            continue
        hit[label] = box
    return len(hit) / len(phrases)


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def samples() -> list[Sample]:
    return [
        Sample("one", f"<__dj__image> {CAPTIONS[0]} <|__dj__eoc|>", ["imgs/0.png"]),
        Sample(
            "multi",  # a two-image chunk, a chunk without images, a phrase-less chunk, a last chunk
            f"<__dj__image> <__dj__image> {CAPTIONS[1]} <|__dj__eoc|> no image here <|__dj__eoc|> "
            f"<__dj__image> , and <|__dj__eoc|> <__dj__image> {CAPTIONS[2]} <|__dj__eoc|>",
            ["imgs/1.png", "imgs/2.png", "imgs/3.png", "imgs/4.png"],
        ),
        Sample("text-only", "words without images", []),
        Sample("two", f"<__dj__image> {CAPTIONS[2]} <|__dj__eoc|>", ["imgs/5.png"]),
    ]


def test_noun_phrases_follow_the_grammar(grounding):
    tagger = load_tagger(grounding["nltk"])
    assert noun_phrases(CAPTIONS[0], tagger) == ["a simple picture", "red circles", "the left"]
    assert noun_phrases("A red bus. The red bus!", tagger)[-1] == "the red bus"  # sentences split, punctuation off
    for text in CAPTIONS:
        assert noun_phrases(text, tagger) == reference_phrases(text, grounding["nltk"])
    assert noun_phrases(", and", tagger) == [] and noun_phrases("", tagger) == []


@pytest.mark.parametrize(
    "params",
    [{}, {"conf_thr": 0.6}, {"iou_thr": 0.0}, {"large_area_ratio_thr": 0.1}, {"horizontal_flip": True, "vertical_flip": True}],
    ids=["defaults", "conf", "iou", "area", "flips"],
)
def test_recall_matches_unbatched_reference(grounding, default_stats, params):
    ref_params = {
        "conf_thr": params.get("conf_thr", 0.0), "iou_thr": params.get("iou_thr", 0.5),
        "area_thr": params.get("large_area_ratio_thr", 0.95),
        "hflip": params.get("horizontal_flip", False), "vflip": params.get("vertical_flip", False),
    }
    stats = make_op(grounding, min_recall=0.0, reduce_mode="avg", **params).compute_stats(samples())
    if params and "horizontal_flip" not in params:  # each rule bites on the pico detector
        assert stats != default_stats, params
    p = [reference_phrases(c, grounding["nltk"]) for c in CAPTIONS]
    r = {(i, cap): reference_recall(grounding, f"imgs/{i}.png", p[cap], **ref_params) for i, cap in ((0, 0), (1, 1), (2, 1), (4, 2), (5, 2))}
    assert stats[0] == pytest.approx([r[0, 0]])
    assert stats[1] == pytest.approx([(r[1, 1] + r[2, 1]) / 2, 1.0, r[4, 2]])  # phrase-less chunk: 1.0
    assert stats[2] == []
    assert stats[3] == pytest.approx([r[5, 2]])


def test_reduce_modes_bounds_any_all_and_a_corrupt_image(grounding):
    by_mode = {m: make_op(grounding, min_recall=0.0, reduce_mode=m).compute_stats(samples())[1][0] for m in ("avg", "max", "min")}
    assert by_mode["min"] <= by_mode["avg"] <= by_mode["max"]
    batch = samples()
    batch[0].images = ["imgs/bad.png"]  # first row of the first batch
    stats = make_op(grounding, min_recall=0.0).compute_stats(batch)
    assert isinstance(stats[0], Failure) and "bad.png" in stats[0].reason
    assert not any(isinstance(s, Failure) for s in stats[1:])
    multi = stats[1]
    low = sorted(multi)[1]
    for mode, expect in (("any", any(low <= v for v in multi)), ("all", all(low <= v for v in multi))):
        op = make_op(grounding, min_recall=low, max_recall=1.0, any_or_all=mode)
        decision = op.process([samples()[1]])[0]
        assert decision.keep == expect
    assert make_op(grounding, min_recall=0.0).process([samples()[2]])[0].keep  # no image: nothing to judge


def test_missing_tagger_is_a_clear_error(grounding, tmp_path):
    assert OPERATORS.get("phrase_grounding_recall_filter") is PhraseGroundingRecallFilter
    op = PhraseGroundingRecallFilter(
        PhraseGroundingRecallFilter.Config(hf_owlvit="owlvit", nltk_data=str(tmp_path)),
        OpContext(engine=Engine(dataset_root=grounding["data"]), model_root=grounding["models"]),
    )
    with pytest.raises(NltkDataError, match="averaged_perceptron_tagger_eng"):
        op.compute_stats(samples()[:1])
    with pytest.raises(ValueError, match="trust_remote_code"):
        PhraseGroundingRecallFilter.Config(trust_remote_code=True)
