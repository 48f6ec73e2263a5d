"""image_watermark_filter against the classifier's own forward (softmax(logits)[1] per image), and
`analyze` over a Data-Juicer recipe using every model-scored op of this family."""

import csv
import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from ops_testutil import write_image, write_jsonl
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.ops import ImageWatermarkFilter, OpContext
from bettersynth_demo.op_models import (
    build_tiny_aesthetics_predictor,
    build_tiny_blip_itm,
    build_tiny_watermark_detector,
)

DETECTOR = "amrul-hzz/watermark_detector"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("watermark-models")
    build_tiny_watermark_detector(root / DETECTOR)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("watermark-data")
    for i in range(5):
        write_image(root / "imgs" / f"{i}.png", seed=40 + i, size=(48, 36 + 6 * i))
    (root / "imgs" / "bad.png").write_bytes(b"GIF89a nope")
    return root


@functools.cache
def classifier(folder: Path):
    from transformers import ViTForImageClassification, ViTImageProcessor

    return ViTForImageClassification.from_pretrained(folder).eval(), ViTImageProcessor.from_pretrained(folder)


def reference(folder: Path, paths: list[Path]) -> list[float]:
    model, processor = classifier(folder)
    out = []
    for path in paths:
        with torch.no_grad():
            logits = model(**processor(images=Image.open(path).convert("RGB"), return_tensors="pt")).logits
        out.append(float(torch.softmax(logits, dim=-1)[0, 1]))
    return out


def make_op(model_root, data_root, batch_size=2, **params) -> ImageWatermarkFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    return ImageWatermarkFilter(ImageWatermarkFilter.Config(**params), OpContext(engine=engine, model_root=model_root))


def samples() -> list[Sample]:
    return [
        Sample("one", "<__dj__image> a cat", ["imgs/0.png"]),
        Sample("three", "<__dj__image> <__dj__image> two <|__dj__eoc|> <__dj__image> one more", ["imgs/1.png", "imgs/2.png", "imgs/3.png"]),
        Sample("none", "text only", []),
        Sample("dup", "<__dj__image> <__dj__image> same twice", ["imgs/4.png", "imgs/4.png"]),
    ]


def paths(data_root: Path, *names: int) -> list[Path]:
    return [data_root / "imgs" / f"{i}.png" for i in names]


def test_watermark_prob_matches_classifier(model_root, data_root):
    batch = samples()
    make_op(model_root, data_root).process(batch)
    folder = model_root / DETECTOR
    three = reference(folder, paths(data_root, 1, 2, 3))
    assert batch[1].stats["image_watermark_prob"] == pytest.approx(three, abs=1e-5)
    assert len({round(p, 6) for p in three}) == 3
    assert batch[0].stats["image_watermark_prob"] == pytest.approx(reference(folder, paths(data_root, 0)), abs=1e-5)
    assert batch[3].stats["image_watermark_prob"] == pytest.approx(reference(folder, paths(data_root, 4)), abs=1e-5)
    assert batch[2].stats["image_watermark_prob"] == []


def test_watermark_threshold_is_closed_and_any_or_all(model_root, data_root):
    probe = samples()[1]
    make_op(model_root, data_root).process([probe])
    probs = sorted(probe.stats["image_watermark_prob"])
    mid = (probs[0] + probs[-1]) / 2
    assert make_op(model_root, data_root, prob_threshold=mid, any_or_all="any").process([samples()[1]])[0].keep
    dropped = make_op(model_root, data_root, prob_threshold=mid, any_or_all="all").process([samples()[1]])[0]
    assert not dropped.keep and dropped.bound == f"prob_threshold={mid}"
    assert make_op(model_root, data_root, prob_threshold=probs[-1], any_or_all="all").process([samples()[1]])[0].keep  # p == threshold kept
    assert not make_op(model_root, data_root, prob_threshold=probs[0] - 1e-6).process([samples()[1]])[0].keep
    assert make_op(model_root, data_root, prob_threshold=0.0).process([samples()[2]])[0].keep  # no image: nothing to judge


def test_watermark_corrupt_image_mid_batch_rejects_only_its_sample(model_root, data_root):
    batch = samples()
    batch.insert(1, Sample("bad", "<__dj__image> x", ["imgs/bad.png"]))
    results = make_op(model_root, data_root, batch_size=3).process(batch)
    assert isinstance(results[1], Failure) and "bad.png" in results[1].reason
    assert sum(isinstance(r, Failure) for r in results) == 1
    assert batch[2].stats["image_watermark_prob"] == pytest.approx(reference(model_root / DETECTOR, paths(data_root, 1, 2, 3)), abs=1e-5)


def test_watermark_defaults_are_data_juicers():
    cfg = ImageWatermarkFilter.Config()
    assert (cfg.hf_watermark_model, cfg.prob_threshold, cfg.any_or_all) == (DETECTOR, 0.8, "any")


def test_analyze_dj_recipe_with_model_scored_image_ops(model_root, data_root, pico_open_clip, tmp_path):
    """`bettersynth analyze` on a Data-Juicer recipe naming each op with its Data-Juicer parameters."""
    from bettersynth.cli.main import main

    build_tiny_blip_itm(model_root / "Salesforce" / "blip-itm-base-coco", ["a red bus", "a cat", "green tree"])
    build_tiny_aesthetics_predictor(model_root / "shunk031" / "aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE")
    records = [{"id": str(i), "text": f"<__dj__image> a red bus {i} <|__dj__eoc|>", "images": [f"imgs/{i}.png"]} for i in range(5)]
    records.insert(2, {"id": "bad", "text": "<__dj__image> a cat", "images": ["imgs/bad.png"]})
    jsonl = write_jsonl(tmp_path / "in.jsonl", records)
    recipe = {
        "project_name": "dj-recipe",
        "dataset_path": str(jsonl),
        "export_path": str(tmp_path / "out.jsonl"),
        "np": 4,
        "process": [
            {"image_text_similarity_filter": {"hf_clip": f"local-dir:{pico_open_clip['vit']}", "min_score": 0.1, "reduce_mode": "avg"}},
            {"image_text_matching_filter": {"hf_blip": "Salesforce/blip-itm-base-coco", "min_score": 0.003, "max_score": 1.0}},
            {"image_aesthetics_filter": {"hf_scorer_model": "", "min_score": 0.4, "max_score": 1.0, "any_or_all": "any"}},
            {"image_watermark_filter": {"hf_watermark_model": DETECTOR, "prob_threshold": 0.8, "mem_required": "500MB"}},
        ],
    }
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "analysis"
    code = main(["analyze", str(recipe_path), "--out", str(out), "--model-root", str(model_root), "--dataset-root", str(data_root),
                 "--num-workers", "1", "--k-sigma", "1"])
    assert code == 0
    rows = {r["stat"]: r for r in csv.DictReader(open(out / "stats.csv"))}
    stats = ["image_text_similarity", "image_text_matching_score", "image_aesthetics_scores", "image_watermark_prob"]
    assert set(rows) == set(stats)
    assert all((rows[s]["count"], rows[s]["failed"]) == ("5", "1") for s in stats)  # the corrupt image costs one sample
    assert {p.name for p in out.glob("hist_*.png")} == {f"hist_{s}.png" for s in stats}
    per_sample = {r["id"]: r["stats"] for r in map(json.loads, (out / "stats.jsonl").read_text().splitlines())}
    probs = [per_sample[str(i)]["image_watermark_prob"][0] for i in range(5)]
    assert probs == pytest.approx([p for i in range(5) for p in reference(model_root / DETECTOR, paths(data_root, i))], abs=1e-5)
    auto = yaml.safe_load((out / "auto_recipe.yaml").read_text())["process"]
    mean, std = float(rows["image_watermark_prob"]["mean"]), float(rows["image_watermark_prob"]["std"])
    assert auto[3]["image_watermark_filter"]["prob_threshold"] == pytest.approx(mean + std)
