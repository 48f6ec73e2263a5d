"""No evaluation or held-out image shows a scene, or pixels, that a training split shows.

Training splits: seed, instruction, scorer (which the LM and the captioner also learn from) and
calibration. At this size the generator that drew benchmarks outside eval scenes only put 7 of
180 benchmark images on a training scene (5 + 2 MMBench); at the default size 122 of 900.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bettersynth_demo.leakage import benchmark_images, shared_pixels
from bettersynth_demo.ledger import pixel_digest
from bettersynth_demo.proxy.world import ProxyWorldConfig, ProxyWorldPaths, build_proxy_world, scene_from_json
from bettersynth_demo.render import encode_image, render_scene
from bettersynth_demo.world import WorldConfig

REDUCED = ProxyWorldConfig(
    world=WorldConfig(seed=3, n_seed_samples=300, mismatch_fraction=0.5, n_instruct=0, n_textvqa=60, n_mmbench=60,
                      n_heldout_textvqa=30, n_heldout_mmbench=30),
    n_instruct=100, n_scorer=400, n_calibration=40,
)
TRAINING = ("seed", "instruct", "scorer", "calibration")
BENCHMARKS = ("eval/textvqa", "eval/mmbench", "heldout/textvqa", "heldout/mmbench")


@pytest.fixture(scope="module")
def reduced(tmp_path_factory) -> ProxyWorldPaths:
    return build_proxy_world(tmp_path_factory.mktemp("reduced"), REDUCED)


def _scenes(paths: ProxyWorldPaths) -> dict[str, list]:
    index = json.loads(paths.world.scene_index.read_text())
    labels = json.loads(paths.world.labels.read_text())
    index["seed"] = [label["truth"] for label in labels.values()]
    return {split: [scene_from_json(scene) for scene in scenes] for split, scenes in index.items()}


def test_no_benchmark_image_has_the_pixels_of_a_training_image(reduced: ProxyWorldPaths) -> None:
    images = benchmark_images(reduced.world)
    assert {split: len(found) for split, found in images.items()} == dict(zip(BENCHMARKS, (60, 60, 30, 30)))
    assert shared_pixels(images, reduced.training_images()) == {split: [] for split in BENCHMARKS}


def test_the_pixel_check_finds_a_trained_image_in_either_encoding(reduced: ProxyWorldPaths, tmp_path: Path) -> None:
    """A seed image copied into the TextVQA split (as JPEG) and into MMBench (as base64 PNG) is caught."""
    seed_png = sorted(reduced.world.seed_images.glob("*.png"))[7]
    with Image.open(seed_png) as handle:
        image = handle.convert("RGB")
    images = benchmark_images(reduced.world)
    images["eval/textvqa"][3] = ("planted", Image.open(io.BytesIO(encode_image(image, "jpeg"))).convert("RGB"))
    images["heldout/mmbench"][0] = ("planted", image)
    shared = shared_pixels(images, reduced.training_images())
    assert shared["eval/textvqa"] == [("planted", "seed")] and shared["heldout/mmbench"] == [("planted", "seed")]


def test_no_benchmark_scene_is_a_training_scene(reduced: ProxyWorldPaths) -> None:
    scenes = _scenes(reduced)
    assert set(scenes) == {*TRAINING, *BENCHMARKS}
    trained = {scene.key() for split in TRAINING for scene in scenes[split]}
    trained_pixels = {pixel_digest(render_scene(s, 64)) for split in TRAINING for s in scenes[split]}
    for split in BENCHMARKS:
        assert not {scene.key() for scene in scenes[split]} & trained, split
        assert not {pixel_digest(render_scene(s, 64)) for s in scenes[split]} & trained_pixels, split


def test_the_scene_index_is_what_the_images_show(reduced: ProxyWorldPaths) -> None:
    """The index the scene check reads is true: each listed scene renders to its split's image, in order."""
    scenes, images = _scenes(reduced), benchmark_images(reduced.world)
    for split in BENCHMARKS:
        encode = (lambda im: Image.open(io.BytesIO(encode_image(im, "jpeg")))) if "textvqa" in split else (lambda im: im)
        assert [pixel_digest(encode(render_scene(s, 64))) for s in scenes[split]] == \
            [pixel_digest(image) for _, image in images[split]], split
    records = json.loads(reduced.world.instruct_json.read_text())
    for record, scene in zip(records, scenes["instruct"], strict=True):
        with Image.open(reduced.world.instruct_json.parent / record["image"]) as handle:
            assert pixel_digest(handle) == pixel_digest(render_scene(scene, 64)), record["id"]
    clean = sorted((reduced.scorer_jsonl.parent / "images").glob("*.png"))
    for path, scene in zip(clean, scenes["scorer"] + scenes["calibration"], strict=True):
        with Image.open(path) as handle:
            assert pixel_digest(handle) == pixel_digest(render_scene(scene, 64)), path.name
