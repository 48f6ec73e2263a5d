"""image_aesthetics_filter against a by-hand computation: transformers' CLIP vision tower, the head's
weights read straight from the safetensors file, and LAION's /10."""

import functools
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from ops_testutil import write_image
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.ops import ImageAestheticsFilter, OpContext
from bettersynth.ops.image_aesthetics_filter import DEFAULT_SCORER
from bettersynth_demo.op_models import build_tiny_aesthetics_predictor


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    """The default predictor name under a model root, plus V2-ReLU and V1 variants of the same weights."""
    root = tmp_path_factory.mktemp("aesthetics-models")
    v2 = build_tiny_aesthetics_predictor(root / DEFAULT_SCORER)
    relu = shutil.copytree(v2, root / "aesthetics-predictor-v2-ava-logos-l14-reluMSE")
    config = json.loads((relu / "config.json").read_text())
    (relu / "config.json").write_text(json.dumps(config | {"architectures": ["AestheticsPredictorV2ReLU"]}))
    v1 = shutil.copytree(v2, root / "aesthetics-predictor-v1-vit-large-patch14")
    state = safetensors.torch.load_file(v1 / "model.safetensors")
    state = {k: v for k, v in state.items() if not k.startswith("layers.")}
    generator = torch.Generator().manual_seed(1)
    state |= {"predictor.weight": torch.randn(1, 32, generator=generator), "predictor.bias": torch.tensor([5.0])}
    safetensors.torch.save_file(state, v1 / "model.safetensors", metadata={"format": "pt"})
    (v1 / "config.json").write_text(json.dumps(config | {"architectures": ["AestheticsPredictorV1"]}))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aesthetics-data")
    for i in range(5):
        write_image(root / "imgs" / f"{i}.png", seed=30 + i, size=(40 + 4 * i, 40))
    (root / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


@functools.cache
def tower(folder: Path):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection.from_pretrained(folder).eval(), CLIPImageProcessor.from_pretrained(folder)


def reference(folder: Path, paths: list[Path], relu: bool = False) -> list[float]:
    """normalise(image_embeds) -> each head linear (ReLU between for the ReLU variant) -> / 10."""
    model, processor = tower(folder)
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    if "predictor.weight" in weights:
        linears = [(weights["predictor.weight"], weights["predictor.bias"])]
    else:
        linears = [(weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]) for i in (0, 2, 4, 6, 7)]
    out = []
    for path in paths:
        with torch.no_grad():
            pixels = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
            x = model(pixel_values=pixels).image_embeds[0]
            x = x / x.norm()
            for n, (w, b) in enumerate(linears):
                x = w @ x + b
                if relu and n < len(linears) - 1:
                    x = torch.relu(x)
        out.append(float(x[0]) / 10)
    return out


def make_op(model_root, data_root, batch_size=2, **params) -> ImageAestheticsFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    return ImageAestheticsFilter(ImageAestheticsFilter.Config(**params), OpContext(engine=engine, model_root=model_root))


def samples() -> list[Sample]:
    return [
        Sample("one", "<__dj__image> a cat", ["imgs/0.png"]),
        Sample("three", "<__dj__image> <__dj__image> two <|__dj__eoc|> <__dj__image> one more", ["imgs/1.png", "imgs/2.png", "imgs/3.png"]),
        Sample("none", "text only", []),
        Sample("dup", "<__dj__image> <__dj__image> same twice", ["imgs/4.png", "imgs/4.png"]),
    ]


def paths(data_root: Path, *names: int) -> list[Path]:
    return [data_root / "imgs" / f"{i}.png" for i in names]


@pytest.mark.parametrize("hf_scorer_model", ["", DEFAULT_SCORER])
def test_aesthetics_matches_by_hand_v2_linear(model_root, data_root, hf_scorer_model):
    """Data-Juicer's default spelling ("") and the full name load the same predictor."""
    batch = samples()
    make_op(model_root, data_root, hf_scorer_model=hf_scorer_model, min_score=0.0).process(batch)
    folder = model_root / DEFAULT_SCORER
    assert batch[0].stats["image_aesthetics_scores"] == pytest.approx(reference(folder, paths(data_root, 0)), abs=1e-5)
    three = reference(folder, paths(data_root, 1, 2, 3))
    assert batch[1].stats["image_aesthetics_scores"] == pytest.approx(three, abs=1e-5)
    assert len(set(round(v, 6) for v in three)) == 3  # the images are told apart
    assert batch[2].stats["image_aesthetics_scores"] == []
    assert batch[3].stats["image_aesthetics_scores"] == pytest.approx(reference(folder, paths(data_root, 4)), abs=1e-5)  # once per distinct image


@pytest.mark.parametrize("variant, relu", [("aesthetics-predictor-v2-ava-logos-l14-reluMSE", True), ("aesthetics-predictor-v1-vit-large-patch14", False)])
def test_aesthetics_relu_and_v1_heads(model_root, data_root, variant, relu):
    batch = samples()[:2]
    make_op(model_root, data_root, hf_scorer_model=variant, min_score=-100.0, max_score=100.0).process(batch)
    expected = reference(model_root / variant, paths(data_root, 1, 2, 3), relu=relu)
    assert batch[1].stats["image_aesthetics_scores"] == pytest.approx(expected, abs=1e-5)
    linear = reference(model_root / DEFAULT_SCORER, paths(data_root, 1, 2, 3))
    assert expected != pytest.approx(linear, abs=1e-4)  # the variant really computes something else


def test_aesthetics_any_or_all_and_closed_bounds(model_root, data_root):
    probe = samples()[1]
    make_op(model_root, data_root, min_score=0.0).process([probe])
    scores = sorted(probe.stats["image_aesthetics_scores"])
    low, high = scores[0], scores[-1]
    mid = (low + high) / 2
    assert make_op(model_root, data_root, min_score=mid, any_or_all="any").process([samples()[1]])[0].keep
    dropped = make_op(model_root, data_root, min_score=mid, any_or_all="all").process([samples()[1]])[0]
    assert not dropped.keep and dropped.bound == f"min_score={mid}"
    assert make_op(model_root, data_root, min_score=low, max_score=high, any_or_all="all").process([samples()[1]])[0].keep
    capped = make_op(model_root, data_root, min_score=0.0, max_score=low - 1e-4).process([samples()[1]])[0]
    assert not capped.keep and capped.bound.startswith("max_score=")


def test_aesthetics_corrupt_image_mid_batch_rejects_only_its_sample(model_root, data_root):
    batch = samples()
    batch.insert(2, Sample("bad", "<__dj__image> x", ["imgs/bad.png"]))
    results = make_op(model_root, data_root, batch_size=3, min_score=0.0).process(batch)
    assert isinstance(results[2], Failure) and "bad.png" in results[2].reason
    assert sum(isinstance(r, Failure) for r in results) == 1
    assert batch[1].stats["image_aesthetics_scores"] == pytest.approx(reference(model_root / DEFAULT_SCORER, paths(data_root, 1, 2, 3)), abs=1e-5)


def test_aesthetics_folder_without_head_is_refused(model_root, data_root, tmp_path):
    folder = shutil.copytree(model_root / DEFAULT_SCORER, tmp_path / "headless")
    state = safetensors.torch.load_file(folder / "model.safetensors")
    safetensors.torch.save_file({k: v for k, v in state.items() if not k.startswith("layers.")}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="headless.*head"):
        make_op(tmp_path, data_root, hf_scorer_model="headless").process(samples()[:1])


def test_aesthetics_defaults_are_data_juicers():
    cfg = ImageAestheticsFilter.Config()
    assert (cfg.hf_scorer_model, cfg.min_score, cfg.max_score, cfg.any_or_all) == (DEFAULT_SCORER, 0.5, 1.0, "any")
    assert DEFAULT_SCORER == "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"
