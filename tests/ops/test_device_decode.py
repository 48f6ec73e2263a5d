"""decode="device": workers read JPEG bytes, the model's device decodes the batch; scores and rejections as the CPU path's.

On CPU, torchvision's decode_jpeg and PIL both run libjpeg-turbo and the same
torchvision image processor resizes either result, so the two paths agree
exactly: measured max |score difference| 0.0 over these images, plain and
flipped (and 0.0 over 64 JPEGs of 512-1024 px at a 336 px crop). Where a file
fails to decode, the device path keeps the batch's shape with a placeholder
while the CPU path drops the row, and the other rows' scores then differ by
float reassociation: 1.2e-7 measured. The tolerance (1e-6) is 8x that, and
100x below the smallest score change that +-1 grey level of noise on a decoded
image causes with this model (1.1e-4, median 4.7e-4), so a real decoder or
preprocessing difference fails it. On CUDA (nvjpeg) the gap is measured by
benchmarks/gpu_check_scoring.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ops_testutil import write_jsonl
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine import ClipSimilarityTask, Engine, EngineSettings, Failure
from bettersynth.engine.device_decode import EncodedJpeg, jpeg_size, read_jpeg
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe

TOLERANCE = 1e-6  # see the module docstring: measured 0.0, and 1.2e-7 beside a failed file
# name -> (PIL mode, save options); sizes vary so the batch holds several shapes
JPEGS = {
    "rgb420.jpg": ("RGB", {"quality": 85}),
    "rgb444.jpg": ("RGB", {"quality": 95, "subsampling": 0}),
    "progressive.jpg": ("RGB", {"quality": 80, "progressive": True}),
    "gray.jpg": ("L", {"quality": 90}),
    "wide.jpg": ("RGB", {"quality": 75}),
    "tall.jpg": ("RGB", {"quality": 75}),
}
CPU_DECODED = {"cmyk.jpg": ("CMYK", {"quality": 90}), "photo.png": ("RGB", {})}  # what the device path leaves to PIL


def photo(seed: int, width: int, height: int) -> Image.Image:
    """Smooth colour fields with grain: compresses like a photo, unlike uniform noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(float)
    channels = [127 + 100 * np.sin(x / rng.uniform(5, 40) + y / rng.uniform(5, 40) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = np.stack(channels, -1) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device-decode")
    sizes = [(96, 72), (64, 64), (120, 90), (80, 100), (300, 60), (50, 240), (70, 70), (90, 110)]
    for i, (name, (mode, options)) in enumerate({**JPEGS, **CPU_DECODED}.items()):
        photo(i, *sizes[i]).convert(mode).save(root / name, **options)
    good = (root / "rgb420.jpg").read_bytes()
    sos = good.index(b"\xff\xda")
    header = good[: sos + 2 + int.from_bytes(good[sos + 2 : sos + 4], "big")]  # up to the first scan's data
    noise = np.random.RandomState(0).randint(0, 256, 3000).astype(np.uint8).tobytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])  # scan cut short
    (root / "garbage.jpg").write_bytes(header + noise + b"\xff\xd9")  # scan of random bytes: both decoders refuse it
    (root / "lenient.jpg").write_bytes(header + bytes(range(256)) * 8)  # torchvision refuses it, PIL decodes it
    return root


def samples_for(names: list[str]) -> list[Sample]:
    return [Sample(f"s{i}-{name}", f"<__dj__image> a photo numbered {i} <|__dj__eoc|>", [name]) for i, name in enumerate(names)]


def scores(model_root: Path, root: Path, samples: list[Sample], decode: str, batch_size: int = 3, **task) -> list:
    engine = Engine(EngineSettings(batch_size=batch_size, decode=decode), dataset_root=root)
    return engine.run(ClipSimilarityTask(model_path=model_root / "clip", **task), samples)


@pytest.mark.parametrize("flips", [{}, {"horizontal_flip": True, "vertical_flip": True}])
def test_device_decode_scores_match_the_cpu_path(model_root, data_root, flips):
    names = list(JPEGS) + list(CPU_DECODED)
    assert all(isinstance(read_jpeg(data_root / n, 10**8), EncodedJpeg) for n in JPEGS)  # these are decoded on the device
    assert all(read_jpeg(data_root / n, 10**8) is None for n in CPU_DECODED)  # these by PIL, as on the CPU path
    samples = samples_for(names)
    cpu = scores(model_root, data_root, samples, "cpu", **flips)
    device = scores(model_root, data_root, samples, "device", **flips)
    assert not any(isinstance(r, Failure) for r in cpu + device)
    gap = max(abs(c[key] - d[key]) for c, d in zip(cpu, device) for key in c)
    assert gap <= TOLERANCE, f"max |score difference| {gap:.2e}"
    png = names.index("photo.png")
    assert device[png] == cpu[png]  # decoded by PIL in the worker: the same numbers exactly
    assert len({round(v, 6) for r in cpu for v in r.values()}) == len(names)  # the images really differ


def test_device_decode_corrupt_jpeg_rejects_exactly_its_sample(model_root, data_root):
    for bad in ("truncated.jpg", "garbage.jpg", "lenient.jpg"):  # their headers pass: what fails is the decode itself
        assert isinstance(read_jpeg(data_root / bad, 10**8), EncodedJpeg)
    names = ["rgb420.jpg", "truncated.jpg", "gray.jpg", "rgb444.jpg", "garbage.jpg", "lenient.jpg", "wide.jpg", "photo.png"]
    samples = samples_for(names)
    cpu = scores(model_root, data_root, samples, "cpu", batch_size=4)
    device = scores(model_root, data_root, samples, "device", batch_size=4)
    failed = [i for i, r in enumerate(device) if isinstance(r, Failure)]
    assert failed == [1, 4] == [i for i, r in enumerate(cpu) if isinstance(r, Failure)]
    for i in failed:  # the same message as the CPU path: the last try is PIL's decode
        assert device[i].reason == cpu[i].reason and names[i] in device[i].reason
    for i in set(range(len(names))) - set(failed):
        assert abs(device[i][(0, 0, 0)] - cpu[i][(0, 0, 0)]) <= TOLERANCE
    lenient = names.index("lenient.jpg")  # the batch's decode failed, then it alone; PIL's decode scored it as on the CPU
    assert device[lenient] == cpu[lenient]


def test_device_decode_pixel_budget_refuses_from_the_header(model_root, data_root):
    width, height = 96, 72
    assert jpeg_size((data_root / "rgb420.jpg").read_bytes()) == (width, height)
    assert read_jpeg(data_root / "rgb420.jpg", width * height - 1) is None  # over budget: the CPU path refuses it
    samples = samples_for(["rgb420.jpg", "rgb444.jpg"])
    engine = Engine(EngineSettings(decode="device", max_pixels=width * height - 1), dataset_root=data_root)
    results = engine.run(ClipSimilarityTask(model_path=model_root / "clip"), samples)
    assert isinstance(results[0], Failure) and "possible decompression bomb" in results[0].reason
    assert not isinstance(results[1], Failure)  # 64 x 64 fits


def test_device_decode_leaves_odd_files_to_the_cpu_path(data_root, tmp_path):
    good = (data_root / "rgb420.jpg").read_bytes()
    adobe_rgb = good[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + good[2:]  # transform 0: RGB-coded
    adobe_ycc = adobe_rgb.replace(b"Adobe\x00\x64\x00\x00\x00\x00\x00", b"Adobe\x00\x64\x00\x00\x00\x00\x01")
    assert jpeg_size(adobe_rgb) is None and jpeg_size(adobe_ycc) == (96, 72)
    lossless = good.replace(b"\xff\xc0", b"\xff\xc3", 1)
    assert b"\xff\xc0" in good and jpeg_size(lossless) is None
    assert jpeg_size(good[:20]) is None and jpeg_size(b"") is None  # no frame header before the data ends
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_jpeg(tmp_path / "empty.jpg", 10**8) is None and read_jpeg(tmp_path / "missing.jpg", 10**8) is None


def test_device_decode_setting_is_validated():
    with pytest.raises(ValueError, match=r"decode: must be one of 'cpu', 'device', 'auto', got 'gpu'"):
        EngineSettings(decode="gpu")
    assert Engine(EngineSettings(decode="device", device="cpu")).decode_on_device
    assert not Engine(EngineSettings(decode="auto", device="cpu")).decode_on_device  # auto: only on CUDA
    assert not Engine(EngineSettings()).decode_on_device  # the default is the CPU path


def test_device_decode_through_run_recipe_with_a_worker(model_root, data_root, tmp_path):
    names = ["rgb420.jpg", "garbage.jpg", "progressive.jpg", "cmyk.jpg", "tall.jpg"]
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"id": s.id, "text": s.text, "images": s.images} for s in samples_for(names)])
    recipe = Recipe.from_dict({"use_cache": False, "process": [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}]})
    stats, rejected = {}, {}
    for decode in ("cpu", "device"):
        out = tmp_path / decode
        # No ingestion checks, so the garbage file reaches the op (in a worker process) and is rejected there.
        report = run_recipe(recipe, jsonl, data_root, out, model_root=model_root, batch_size=4, num_workers=1,
                            validate_images=False, decode=decode)
        assert (report.kept, report.rejected) == (4, 1)
        stats[decode] = {json.loads(line)["id"]: json.loads(line)["__dj__stats__"]["image_text_similarity"]
                         for line in (out / "samples.jsonl").read_text().splitlines()}
        rejected[decode] = [(r["id"], r["op"]) for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())]
    assert rejected["device"] == rejected["cpu"] == [("s1-garbage.jpg", "image_text_similarity_filter")]
    assert stats["device"].keys() == stats["cpu"].keys()
    assert max(abs(stats["device"][k][0] - stats["cpu"][k][0]) for k in stats["cpu"]) <= TOLERANCE
