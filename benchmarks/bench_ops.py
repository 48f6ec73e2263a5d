"""image_text_similarity_filter throughput: bettersynth end to end vs the bare CLIP forward (vs Data-Juicer).

Why: the engine promises to run an operator close to the speed of the model
itself (target >= 0.9x the bare forward on CPU). The data are generated
images with *unique* captions whose lengths follow the challenge's range
(5-60 words, uniform), so no caption is encoded once for several images and
batches pad to real lengths. The model is a real-size CLIP ViT-B/32 (from
``CLIPConfig()`` defaults, random weights: the compute of
openai/clip-vit-base-patch32) with a locally trained tokenizer; nothing is
downloaded. Contenders, each in a fresh interpreter with the model loaded
before its clock starts, interleaved over ``--rounds`` (benchmarks/harness.py):

1. ``bare``: the model forward alone on pre-decoded, pre-batched tensors (the ceiling);
2. ``ours-wN``: ``run_recipe`` with ``image_text_similarity_filter`` and N decoding
   workers (read jsonl, decode, preprocess, score, write the output folder);
3. ``data-juicer``: Data-Juicer's op on the same jsonl and model, only with
   ``--dj-python`` (a separate venv with py-data-juicer; skipped otherwise).

    python benchmarks/bench_ops.py --samples 128 --rounds 3 --json benchmarks/results/ops.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from harness import Clock, Contender, compare, emit, load_average, run_rounds, write_json

BARE_TARGET = 0.9  # ours / bare samples per second, on CPU
MIN_WORDS, MAX_WORDS = 5, 60

# Data-Juicer's side, run by its own interpreter: the op end to end (load jsonl, decode,
# score, filter, export), its model loaded before the clock starts, as ours.
DJ_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from data_juicer.core.data import NestedDataset
    from data_juicer.ops.filter.image_text_similarity_filter import ImageTextSimilarityFilter
    from data_juicer.utils.model_utils import get_model

    jsonl, model_dir, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    op = ImageTextSimilarityFilter(hf_clip=model_dir, min_score=-1.0, max_score=1.0, num_proc=1)
    get_model(op.model_key)
    start = time.perf_counter()
    rows = [json.loads(line) for line in open(jsonl)]
    ds = NestedDataset.from_list(rows)
    ds = ds.add_column("__dj__stats__", [{} for _ in range(len(ds))])
    ds = ds.map(op.compute_stats, num_proc=1, batched=op.is_batched_op(), batch_size=1000)
    ds = ds.filter(op.process, num_proc=1, batched=op.is_batched_op(), batch_size=1000)
    ds.to_json(out_path, force_ascii=False)
    seconds = time.perf_counter() - start
    scores = {s["id"]: s["__dj__stats__"]["image_text_similarity"][0] for s in ds}
    print("RESULT " + json.dumps({"seconds": seconds, "samples_per_s": len(rows) / seconds, "scores": scores}))
    """
)


def unique_captions(jsonl: Path, seed: int = 0) -> None:
    """Give every sample its own caption of 5-60 words (its scene's caption, extended with world words)."""
    from bettersynth.core.sample import caption_text
    from bettersynth.data.jsonl import read_jsonl, write_samples

    samples = list(read_jsonl(jsonl))
    words = sorted({w for s in samples for text, _ in s.chunks() for w in text.split()})
    rng = random.Random(seed)
    out = []
    for i, sample in enumerate(samples):
        length = rng.randint(MIN_WORDS, MAX_WORDS)
        own = sample.chunks()[0][0].split() + [f"n{i}"]
        text = " ".join((own + [rng.choice(words) for _ in range(length)])[:length])
        out.append(dataclasses.replace(sample, text=caption_text(text)))
    write_samples(jsonl, out)


PICO = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def build_clip_b32(out_dir: Path, texts: list[str], pico: bool = False) -> Path:
    """CLIPConfig() defaults = ViT-B/32 (vision 768x12, patch 32, 224 px; text 512x12); ``pico`` for tests."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from bettersynth_demo.tokenizers import train_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = train_clip_tokenizer(texts)
    text = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision: dict = {}
    if pico:
        text |= PICO
        vision = PICO | dict(image_size=224, patch_size=32)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32 if pico else 512))
    # As in the trained openai checkpoints: exp(logit_scale) = 100, so Data-Juicer's logits_per_text / 100
    # is the cosine. CLIPConfig's default (2.6592) would scale its scores by 0.14 and its kept set with them.
    model.logit_scale.data.fill_(math.log(100.0))
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def prepare(work: Path, n: int, image_size: int, pico: bool = False) -> tuple[Path, Path]:
    """The world's seed images with unique captions, and the model: (jsonl, model root)."""
    from bettersynth.data.jsonl import read_jsonl
    from bettersynth_demo.world import WorldConfig, build_world

    world = build_world(work / "world", WorldConfig(n_seed_samples=n, image_size=image_size, n_instruct=2, n_textvqa=2,
                                                     n_mmbench=2, n_heldout_textvqa=1, n_heldout_mmbench=1))
    jsonl = world.seed_jsonl
    unique_captions(jsonl)
    texts = [text for s in read_jsonl(jsonl) for text, _ in s.chunks()]
    build_clip_b32(work / "models" / "clip-b32", texts, pico)
    return jsonl, work / "models"


def child_bare(jsonl: Path, model_root: Path, batch_size: int) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import AutoProcessor, CLIPModel

    from bettersynth.core.images import load_image
    from bettersynth.data.jsonl import read_jsonl

    model_dir = model_root / "clip-b32"
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
    samples = list(read_jsonl(jsonl))
    batches = []
    for start in range(0, len(samples), batch_size):
        part = samples[start : start + batch_size]
        images = [load_image(jsonl.parent / s.images[0]) for s in part]
        batches.append(processor(text=[s.chunks()[0][0] for s in part], images=images, return_tensors="pt",
                                 padding=True, truncation=True, max_length=77))  # the engine's limit
    scores: list[float] = []
    with torch.inference_mode():
        model.get_image_features(pixel_values=batches[0]["pixel_values"][:2])  # warm-up
        with Clock() as clock:
            for inputs in batches:
                image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
                text = model.get_text_features(input_ids=inputs["input_ids"],
                                               attention_mask=inputs["attention_mask"]).pooler_output
                scores += (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1).tolist()
    return clock.result(samples_per_s=len(samples) / clock.seconds, samples_per_cpu_s=len(samples) / clock.cpu_seconds,
                        scores=dict(zip((s.id for s in samples), scores)))


def child_ours(jsonl: Path, model_root: Path, out: Path, batch_size: int, workers: int) -> dict:
    from bettersynth.core.device import resolve_device, resolve_dtype
    from bettersynth.data.jsonl import read_jsonl
    from bettersynth.engine import EngineSettings, load_model
    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.runner import run_recipe

    device = resolve_device(EngineSettings().device)
    load_model("hf_clip", model_root / "clip-b32", device, resolve_dtype("auto", device))  # warm the cache
    recipe = Recipe.from_dict({"use_cache": False, "process": [{"image_text_similarity_filter": {"hf_clip": "clip-b32",
                                                                                                 "min_score": -1.0}}]})
    shutil.rmtree(out, ignore_errors=True)
    with Clock() as clock:
        report = run_recipe(recipe, jsonl, jsonl.parent, out, model_root=model_root, batch_size=batch_size,
                            num_workers=workers)
    scores = {s.id: s.stats["image_text_similarity"][0] for s in read_jsonl(out / "samples.jsonl")}
    shutil.rmtree(out, ignore_errors=True)
    if report.kept != report.n_in:
        raise RuntimeError(f"expected every sample kept, got {report}")
    # CPU time of this process only: decoding workers (when any) are not counted
    return clock.result(samples_per_s=report.n_in / clock.seconds, samples_per_cpu_s=report.n_in / clock.cpu_seconds,
                        scores=scores)


def max_score_gap(runs: list[dict], bare_runs: list[dict]) -> float:
    """The largest score difference to the bare forward's, over every sample and round (same ids required)."""
    gap = 0.0
    for run, bare in zip(runs, bare_runs):
        if run["scores"].keys() != bare["scores"].keys():
            raise RuntimeError("the contenders scored different samples")
        gap = max(gap, *(abs(run["scores"][k] - bare["scores"][k]) for k in bare["scores"]))
    return gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128, help="generated image-caption pairs")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated PNGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1], help="bettersynth decoding workers")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--dj-python", help="python of a venv with py-data-juicer; its contender is skipped without it")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder for data and model (deleted after)")
    parser.add_argument("--json", type=Path, help="write the ratios here (for harness.py table)")
    parser.add_argument("--pico", action="store_true", help="a pico CLIP instead of ViT-B/32 (tests: the path, not the speed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child == "bare":
        emit(child_bare(args.jsonl, args.model_root, args.batch_size))
        return 0
    if args.child:
        emit(child_ours(args.jsonl, args.model_root, args.out, args.batch_size, int(args.child.removeprefix("ours-w"))))
        return 0
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-ops-", dir=args.workdir))
    try:
        started = time.perf_counter()
        jsonl, model_root = prepare(work, args.samples, args.image_size, args.pico)
        print(f"data and model built in {time.perf_counter() - started:.0f} s", flush=True)
        common = ["--jsonl", str(jsonl), "--model-root", str(model_root), "--batch-size", str(args.batch_size)]
        names = ["bare"] + [f"ours-w{w}" for w in args.num_workers]
        contenders = [Contender(name, [sys.executable, __file__, "--child", name, *common, "--out", str(work / "out")])
                      for name in names]
        if args.dj_python:
            script = work / "dj_bench.py"
            script.write_text(DJ_SCRIPT)
            # Data-Juicer resolves image paths relative to the jsonl's folder; run from there.
            contenders.append(Contender("data-juicer", [args.dj_python, str(script), str(jsonl), str(model_root / "clip-b32"),
                                                        str(work / "dj_out.jsonl")], cwd=str(jsonl.parent),
                                        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}))
        else:
            print("data-juicer: skipped (no --dj-python given; Data-Juicer is not installed with this project)")
        print(f"{args.samples} samples, unique captions of {MIN_WORDS}-{MAX_WORDS} words, {args.image_size} px PNG, "
              f"CLIP ViT-B/32 (random weights), batch {args.batch_size}", flush=True)
        results = run_rounds(contenders, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    label = f"image_text_similarity, {args.samples} unique captions"
    ratios = [compare(results, name, "bare", "samples_per_s", ">=", BARE_TARGET, f"{label} ({name})")
              for name in names[1:]]
    ratios += [compare(results, "ours-w0", "bare", "samples_per_cpu_s", label=f"{label} (ours-w0)")] if 0 in args.num_workers else []
    if args.dj_python:
        ratios += [compare(results, name, "data-juicer", "samples_per_s", label=f"{label} ({name})") for name in names[1:]]
    for ratio in ratios:
        print(ratio.line())
    diffs = {name: max_score_gap(results[name], results["bare"]) for name in results if name != "bare"}
    agreement = ", ".join(f"{name} {gap:.1e}" for name, gap in diffs.items())
    print(f"max |score - bare score| over samples and rounds: {agreement}")
    print(f"load average after: {load_average()}")
    if args.json:
        command = (f"python benchmarks/bench_ops.py --samples {args.samples} --rounds {args.rounds} "
                   f"--num-workers {' '.join(map(str, args.num_workers))}" + (" --dj-python <venv>" if args.dj_python else ""))
        write_json(args.json, "Scoring (image_text_similarity_filter)", command, ratios, load_before,
                   "samples/s ratios; 'bare' is the CLIP forward on pre-decoded, pre-batched tensors; "
                   f"max |score - bare score|: {agreement}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
