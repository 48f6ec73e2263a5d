"""GPU check: CLIP ViT-L/14-336 scoring through the engine (JPEGs decoded by CPU workers or on the GPU) vs the bare forward.

Why: CI has no GPU, and on one the question is whether the engine keeps the
model fed: decoding 512-1024 px JPEGs on the CPU cores can fall behind a
ViT-L forward, which is what ``EngineSettings.decode="device"`` (nvjpeg, whole
batches) is for. Everything is built offline: a CLIP of ViT-L/14-336's shape
from ``CLIPConfig`` with random weights (``logit_scale`` = ln 100, as the
trained checkpoints), a tokenizer trained on the captions, and N generated
photo-like JPEGs (sides 512-1024 px, 1 in 50 grayscale, 1 in 10 progressive)
with unique 5-60-word captions. In one process, with the model loaded once
(a ViT-L load per fresh process would eat the device time), each round runs
in turn:

1. ``bare``: ``ClipSimilarityTask.forward`` on pre-decoded, pre-batched tensors already on the device (the ceiling);
2. ``cpu``: ``run_recipe`` with ``image_text_similarity_filter``, decode="cpu", workers = cores - 1;
3. ``device``: the same with decode="device";
4. ``device+ingest``: decode="device" with the ingestion checks on (they decode every image on the CPU).

``cpu`` and ``device`` skip the ingestion checks (``validate_images=False``),
so they measure the scoring path the setting changes; ``device+ingest`` shows
what a default run pays on top. The target is ``device`` >= 0.8x ``bare``
(median over rounds of the per-round ratio). Then a faults check: good,
truncated, corrupt, PIL-only-decodable, PNG, grayscale and CMYK files scored
with both settings must reject the same samples with the same reasons.

Run (one H100/H200, no network, about 3-5 minutes)::

    .venv/bin/python benchmarks/gpu_check_scoring.py --samples 4096 --rounds 3
    .venv/bin/python benchmarks/gpu_check_scoring.py --tiny     # CPU smoke run of the same code (pico sizes)

Prints one JSON line: samples/s of each contender, the ratios to ``bare``
with their range over rounds, the max score differences (device vs cpu, cpu
vs bare) and the faults check; exits 1 if the faults check or a contender fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import Clock, compare, load_average, machine

TARGET = 0.8  # device / bare samples per second
MIN_WORDS, MAX_WORDS = 5, 60
CONTENDERS = ("bare", "cpu", "device", "device+ingest")
# CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336): vision 1024 x 24 layers, patch 14 at 336 px; text 768 x 12.
FULL = dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                        image_size=336, patch_size=14),
            text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            projection_dim=768, sides=(512, 1024))
TINY = dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        image_size=32, patch_size=8),
            text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
            projection_dim=32, sides=(48, 96))


def photo(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour fields with grain: compresses (and decodes) like a photo, unlike uniform noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(x / rng.uniform(8, 80) + y / rng.uniform(8, 80) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)


def _write_photo(job: tuple[Path, int, int, int, str]) -> None:
    path, seed, width, height, mode = job
    photo(seed, width, height, mode).save(path, quality=90, progressive=seed % 10 == 4)


def captions(n: int, seed: int = 0) -> list[str]:
    """Unique captions of 5-60 words (uniform) over a fixed vocabulary of pseudo-words."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "po", "shi", "an", "el", "or", "um"]
    vocabulary = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)})
    return [" ".join([f"n{i}"] + [rng.choice(vocabulary) for _ in range(rng.randint(MIN_WORDS, MAX_WORDS) - 1)])
            for i in range(n)]


def build_data(root: Path, n: int, sides: tuple[int, int]) -> tuple[Path, list[str]]:
    """``n`` JPEGs under ``root/imgs`` and a Data-Juicer jsonl naming them: (jsonl, captions)."""
    (root / "imgs").mkdir(parents=True)
    rng = random.Random(1)
    jobs = [(root / "imgs" / f"{i}.jpg", i, rng.randint(*sides), rng.randint(*sides), "L" if i % 50 == 49 else "RGB")
            for i in range(n)]  # 1 in 50 grayscale, 1 in 10 progressive (nvjpeg's hardware decoder takes baseline only)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_photo, jobs, chunksize=16))
    texts = captions(n)
    jsonl = root / "seed.jsonl"
    with jsonl.open("w") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"id": f"s{i}", "text": f"<__dj__image> {text} <|__dj__eoc|>", "images": [f"imgs/{i}.jpg"]}) + "\n")
    return jsonl, texts


def build_clip(out_dir: Path, texts: list[str], shape: dict, device: str) -> Path:
    """A CLIPModel of ``shape`` with random weights, saved with its processor as a user's folder is."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from bettersynth_demo.tokenizers import train_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = train_clip_tokenizer(texts)
    text = shape["text"] | dict(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):  # random init on the GPU takes seconds, not a minute
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=shape["vision"], projection_dim=shape["projection_dim"]))
    model.logit_scale.data.fill_(math.log(100.0))  # exp(logit_scale) = 100, as in the trained checkpoints
    model.save_pretrained(out_dir)
    side = shape["vision"]["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


class Bench:
    """The data, the model (loaded once, through the engine's cache) and one measurement per contender."""

    def __init__(self, work: Path, jsonl: Path, model_root: Path, batch_size: int, workers: int):
        from bettersynth.core.device import resolve_device, resolve_dtype
        from bettersynth.engine import ClipSimilarityTask, load_model

        self.work, self.jsonl, self.model_root = work, jsonl, model_root
        self.batch_size, self.workers = batch_size, workers
        self.device = resolve_device("auto")
        self.dtype = resolve_dtype("auto", self.device)
        self.task = ClipSimilarityTask(model_path=model_root / "clip")
        self.bundle = load_model("hf_clip", model_root / "clip", self.device, self.dtype)
        from bettersynth.data.jsonl import read_jsonl

        self.samples = list(read_jsonl(jsonl))
        self.batches: list[dict] | None = None

    def prebatch(self) -> None:
        """The bare contender's inputs: the images decoded by PIL and preprocessed by the task's own collate, on the device."""
        from bettersynth.core.images import load_image

        root = self.jsonl.parent
        self.batches = []
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for start in range(0, len(self.samples), self.batch_size):
                part = self.samples[start : start + self.batch_size]
                images = pool.map(lambda s: load_image(root / s.images[0]), part)
                prepared = [{"image": image, "text": s.chunks()[0][0]} for image, s in zip(images, part)]
                inputs = self.task.collate(prepared, self.bundle.processor, self.bundle.info)
                self.batches.append({k: self._placed(v) for k, v in inputs.items()})
        self._sync()

    def _placed(self, value: torch.Tensor) -> torch.Tensor:
        """On the device, floats in the model's dtype: as the engine hands inputs to the model."""
        value = value.to(self.device)
        return value.to(self.dtype) if value.is_floating_point() else value

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def bare(self) -> dict:
        scores: list[float] = []
        with torch.inference_mode():
            self.task.forward(self.bundle, self.batches[0], [None] * self.batch_size)  # warm-up
            self._sync()
            with Clock() as clock:
                for inputs in self.batches:
                    scores += self.task.forward(self.bundle, inputs, [None] * len(inputs["text_index"]))
                self._sync()
        return self._result(clock, dict(zip((s.id for s in self.samples), scores)))

    def recipe(self, decode: str, ingest: bool, jsonl: Path | None = None) -> dict:
        from bettersynth.recipes.recipe import Recipe
        from bettersynth.recipes.runner import run_recipe

        jsonl = jsonl or self.jsonl
        recipe = Recipe.from_dict({"use_cache": False, "process": [
            {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}]})
        out = self.work / "out"
        shutil.rmtree(out, ignore_errors=True)
        with Clock() as clock:
            report = run_recipe(recipe, jsonl, jsonl.parent, out, model_root=self.model_root, batch_size=self.batch_size,
                                num_workers=self.workers, validate_images=ingest, decode=decode, resume=False)
            self._sync()
        lines = (out / "samples.jsonl").read_text().splitlines()
        scores = {s["id"]: s["__dj__stats__"]["image_text_similarity"][0] for s in map(json.loads, lines)}
        shutil.rmtree(out, ignore_errors=True)
        if report.kept != report.n_in:
            raise RuntimeError(f"{decode}: expected every sample kept, got {report}")
        return self._result(clock, scores)

    def _result(self, clock: Clock, scores: dict[str, float]) -> dict:
        return clock.result(samples_per_s=len(scores) / clock.seconds, scores=scores)

    def measure(self, name: str) -> dict:
        if name == "bare":
            return self.bare()
        return self.recipe("cpu" if name == "cpu" else "device", ingest=name == "device+ingest")


def faults(root: Path, model_root: Path, batch_size: int) -> dict:
    """Bad files among good ones, scored with both settings on this device: the same rejections, and the scores' gap."""
    from bettersynth.core.sample import Sample
    from bettersynth.engine import ClipSimilarityTask, Engine, EngineSettings, Failure

    root.mkdir(parents=True)
    names = []
    for i, mode in enumerate(["RGB"] * 5 + ["L", "CMYK"]):
        photo(1000 + i, 300 + 40 * i, 260, mode).save(root / f"good{i}.jpg", quality=90)
        names.append(f"good{i}.jpg")
    photo(2000, 200, 180).save(root / "photo.png")
    good = (root / "good0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    noise = np.random.RandomState(0).randint(0, 256, 3000).astype(np.uint8).tobytes()
    (root / "garbage.jpg").write_bytes(scan_header(good) + noise + b"\xff\xd9")  # every decoder refuses it
    small = root / "small.jpg"
    photo(2001, 96, 72).save(small, quality=85)
    (root / "lenient.jpg").write_bytes(scan_header(small.read_bytes()) + bytes(range(256)) * 8)  # PIL decodes it, torchvision not
    small.unlink()
    names[3:3] = ["truncated.jpg", "photo.png", "garbage.jpg", "lenient.jpg"]
    samples = [Sample(f"f{i}", f"<__dj__image> fault case {i} {name}", [name]) for i, name in enumerate(names)]
    task = ClipSimilarityTask(model_path=model_root / "clip")
    runs = {decode: Engine(EngineSettings(batch_size=batch_size, decode=decode), dataset_root=root).run(task, samples)
            for decode in ("cpu", "device")}
    failed = {decode: {names[i]: r.reason for i, r in enumerate(results) if isinstance(r, Failure)}
              for decode, results in runs.items()}
    gaps = [abs(c[(0, 0, 0)] - d[(0, 0, 0)]) for c, d in zip(runs["cpu"], runs["device"])
            if not isinstance(c, Failure) and not isinstance(d, Failure)]
    return {"faults_rejected_cpu": sorted(failed["cpu"]), "faults_rejected_device": sorted(failed["device"]),
            "faults_ok": failed["cpu"] == failed["device"] and bool(failed["cpu"]),
            "faults_max_score_diff": max(gaps) if gaps else None}


def scan_header(jpeg: bytes) -> bytes:
    """A JPEG's bytes up to its first scan's data (markers, tables, frame and scan headers)."""
    sos = jpeg.index(b"\xff\xda")
    return jpeg[: sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")]


def shm_gib() -> float:
    """The size of /dev/shm, where DataLoader workers hand batches over (decode="cpu" batches are full pixel tensors)."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return 0.0
    return stat.f_frsize * stat.f_blocks / 2**30


def max_gap(a: list[dict], b: list[dict]) -> float:
    """The largest score difference between two contenders over every sample and round (same ids required)."""
    gap = 0.0
    for x, y in zip(a, b):
        if x["scores"].keys() != y["scores"].keys():
            raise RuntimeError("the contenders scored different samples")
        gap = max(gap, *(abs(x["scores"][k] - y["scores"][k]) for k in x["scores"]))
    return gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="generated JPEG-caption pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for a reported ratio)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="decoding workers (cores - 1)")
    parser.add_argument("--tiny", action="store_true", help="pico sizes on CPU: checks the script, not the GPU")
    parser.add_argument("--work-dir", type=Path, default=None, help="where data and model go (default: a temp dir, deleted)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        parser.error("no CUDA device: this is the GPU check (use --tiny for a CPU smoke run)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers fork after the tokenizer has run
    shape = TINY if args.tiny else FULL
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-scoring-"))
    load_before = load_average()
    started = time.perf_counter()
    try:
        jsonl, texts = build_data(work / "data", args.samples, shape["sides"])
        build_clip(work / "models" / "clip", texts, shape, "cuda" if cuda else "cpu")
        bench = Bench(work, jsonl, work / "models", args.batch_size, args.workers)
        bench.prebatch()
        warm = jsonl.parent / "warm.jsonl"  # nvjpeg, cuBLAS and the workers' first start, before any clock
        warm.write_text("\n".join(jsonl.read_text().splitlines()[: 2 * args.batch_size]) + "\n")
        for decode in ("cpu", "device"):
            bench.recipe(decode, ingest=False, jsonl=warm)
        built = time.perf_counter() - started
        results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        failed: dict[str, str] = {}  # a contender that fails (e.g. out of shared memory) is reported, not fatal
        for number in range(1, args.rounds + 1):
            for name in (n for n in CONTENDERS if n not in failed):
                try:
                    results[name].append(bench.measure(name))
                except Exception as exc:  # noqa: BLE001 - the device time is spent; report what the others measured
                    failed[name] = f"round {number}: {type(exc).__name__}: {str(exc)[-500:]}"
                    results.pop(name)
            print(f"round {number}/{args.rounds}: " + ", ".join(
                f"{name} {runs[-1]['samples_per_s']:.1f}/s" for name, runs in results.items()), file=sys.stderr, flush=True)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        fault_report = faults(work / "faults", work / "models", batch_size=4)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios = {name: compare(results, name, "bare", "samples_per_s", ">=", TARGET if name == "device" else None)
              for name in CONTENDERS[1:] if name in results and "bare" in results}
    gaps = {f"max_score_diff_{a}_vs_{b}": max_gap(results[a], results[b]) if a in results and b in results else None
            for a, b in (("device", "cpu"), ("cpu", "bare"), ("device", "bare"))}
    report = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (--tiny)",
        "shape": "tiny" if args.tiny else "CLIP ViT-L/14-336 (random weights)",
        "samples": args.samples, "image_sides": list(shape["sides"]), "batch_size": args.batch_size,
        "workers": args.workers, "rounds": args.rounds, "dtype": str(bench.dtype).removeprefix("torch."),
        "samples_per_s": {name: round(statistics.median(r["samples_per_s"] for r in runs), 1) for name, runs in results.items()},
        "ratio_to_bare": {name: round(r.median, 3) for name, r in ratios.items()},
        "ratio_range": {name: [round(min(r.per_round), 3), round(max(r.per_round), 3)] for name, r in ratios.items()},
        "target": f"device >= {TARGET} x bare", "target_met": ratios["device"].met if "device" in ratios else None,
        **gaps, "failed": failed, **fault_report,
        "peak_gpu_gib": round(peak, 2) if peak is not None else None, "shm_gib": round(shm_gib(), 1),
        "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__},
        "load_before": load_before, "load_after": load_average(), "machine": machine(),
        "build_s": round(built, 1), "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))
    return 0 if fault_report["faults_ok"] and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
