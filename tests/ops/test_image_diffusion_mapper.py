"""Stable Diffusion re-synthesis: seeded bytes, content-addressed files, provenance, both modes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from bettersynth.core.sample import Sample
from bettersynth.data.algebra import load_variant
from bettersynth.engine import Engine, EngineSettings, Failure, clear_model_cache
from bettersynth.ops import ImageDiffusionMapper, OpContext
from bettersynth_demo.synthesis_models import build_tiny_stable_diffusion
from bettersynth_demo.world import all_texts


@pytest.fixture(scope="module")
def sd_root(tmp_path_factory, small_world) -> Path:
    root = tmp_path_factory.mktemp("sd-models")
    build_tiny_stable_diffusion(root / "sd", all_texts(small_world))
    yield root
    clear_model_cache()


@pytest.fixture()
def data_root(small_world, tmp_path) -> Path:
    """A private copy of the seed variant (the op writes new images under its root)."""
    return Path(shutil.copytree(small_world.seed_jsonl.parent, tmp_path / "data"))


def generate(sd_root, root, samples, batch_size=4, **params):
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=root)
    params = {"hf_diffusion": "sd", "num_inference_steps": 2} | params
    return ImageDiffusionMapper(ImageDiffusionMapper.Config(**params), OpContext(engine=engine, model_root=sd_root)).process(samples)


def new_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "synth").glob("*")}


@pytest.mark.parametrize("mode", ["img2img", "txt2img"])
def test_diffusion_same_seed_same_bytes_content_addressed(sd_root, data_root, tmp_path, mode):
    samples = load_variant(data_root)[:2]
    results = generate(sd_root, data_root, samples, mode=mode, aug_num=2, seed=1, save_dir="synth")
    files = new_files(data_root)
    assert len(files) == 4  # 2 samples x 2 augmentations, all different images
    for name, data in files.items():
        assert name == hashlib.sha256(data).hexdigest()[:32] + ".png"
    for sample, result in zip(samples, results):
        assert result.original is sample
        assert [s.id for s in result.added] == [f"{sample.id}#diff0", f"{sample.id}#diff1"]
        for k, new in enumerate(result.added):
            assert new.text == sample.text and new.images[0].startswith("synth/") and new.images != sample.images
            record = new.meta["provenance"][-1]
            assert record["op"] == "image_diffusion_mapper" and record["source_id"] == sample.id and record["model"] == "sd"
            assert record["seed"] == 1 and record["aug"] == k and record["mode"] == mode and record["source_images"] == sample.images
    # a rerun regenerates the same bytes into the same names: nothing new is stored
    generate(sd_root, data_root, samples, mode=mode, aug_num=2, seed=1, save_dir="synth")
    assert new_files(data_root) == files
    # elsewhere, from scratch (model reloaded), still the same bytes
    clear_model_cache()
    other = Path(shutil.copytree(data_root, tmp_path / "other", ignore=shutil.ignore_patterns("synth")))
    generate(sd_root, other, samples, mode=mode, aug_num=2, seed=1, save_dir="synth")
    assert new_files(other) == files
    different = generate(sd_root, other, samples[:1], mode=mode, seed=2, save_dir="synth")
    assert different[0].added[0].images[0] not in {s.images[0] for s in results[0].added}


def test_diffusion_keeps_geometry_and_replaces(sd_root, data_root):
    from PIL import Image

    sample = load_variant(data_root)[0]
    (result,) = generate(sd_root, data_root, [sample], keep_original_sample=False, strength=0.5)
    assert result.original is None
    (new,) = result.added
    assert new.images[0].startswith("images/")  # the default save_dir: the variant's image folder
    with Image.open(data_root / new.images[0]) as made, Image.open(data_root / sample.images[0]) as source:
        assert made.size == source.size  # img2img returns the source geometry, as Data-Juicer


def test_diffusion_prompts_from_meta_and_bad_input(sd_root, data_root):
    samples = load_variant(data_root)[:2]
    samples[0].meta["caption"] = "a red bus"
    bad = Sample("broken", "<__dj__image> x <|__dj__eoc|>", ["images/missing.png"], {"caption": "x"})
    first, second, broken = generate(sd_root, data_root, [*samples, bad], caption_key="caption")
    assert first.added and isinstance(second, Failure) and samples[1].id in second.reason and "caption" in second.reason
    assert isinstance(broken, Failure) and "missing.png" in broken.reason
    for bad_dir in ("../out", "/abs"):
        with pytest.raises(ValueError, match="save_dir"):
            ImageDiffusionMapper.Config(save_dir=bad_dir)
