"""image_text_similarity_filter throughput: bare model vs bettersynth end to end vs Data-Juicer.

Why: the engine promises to run an operator close to the speed of the model
itself, and ahead of Data-Juicer's sample-by-sample scoring. Measured in one
run, on the same generated images and the same real-size CLIP ViT-B/32 (built
from ``CLIPConfig()`` defaults, random weights: the compute of
openai/clip-vit-base-patch32), saved with ``save_pretrained`` next to a
processor whose tokenizer is trained locally (nothing is downloaded):

1. ``bare``: the model forward alone, on pre-decoded, pre-batched tensors (the ceiling);
2. ``bettersynth``: ``run_recipe`` with ``image_text_similarity_filter`` (read jsonl,
   decode, preprocess, score, write the output folder);
3. ``data-juicer``: Data-Juicer's op on the same jsonl and model, in a subprocess
   with ``--dj-python`` (a separate venv with py-data-juicer installed), when given.

    python benchmarks/bench_ops.py --samples 300 --batch-size 32 --dj-python /path/to/djvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# Data-Juicer's side, run by its own interpreter: time the op end to end (load jsonl,
# decode, score, filter, export). Model loading is done before the clock starts, as for ours.
DJ_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from data_juicer.core.data import NestedDataset
    from data_juicer.ops.filter.image_text_similarity_filter import ImageTextSimilarityFilter
    from data_juicer.utils.model_utils import get_model

    jsonl, model_dir, out_path, np_ = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    op = ImageTextSimilarityFilter(hf_clip=model_dir, min_score=0.0, max_score=1.0, num_proc=np_)
    get_model(op.model_key)  # warm the model cache, as bettersynth's run is timed with a loaded model
    start = time.perf_counter()
    rows = [json.loads(line) for line in open(jsonl)]
    ds = NestedDataset.from_list(rows)
    ds = ds.add_column("__dj__stats__", [{} for _ in range(len(ds))])
    ds = ds.map(op.compute_stats, num_proc=np_, batched=op.is_batched_op(), batch_size=1000)
    scored = [s["__dj__stats__"].get("image_text_similarity") for s in ds]
    ds = ds.filter(op.process, num_proc=np_, batched=op.is_batched_op(), batch_size=1000)
    ds.to_json(out_path, force_ascii=False)
    elapsed = time.perf_counter() - start
    n_scored = sum(1 for s in scored if s)
    print(json.dumps({"seconds": elapsed, "n": len(rows), "scored": n_scored, "kept": len(ds), "first_stats": scored[:3]}))
    """
)


def build_clip_b32(out_dir: Path, texts: list[str]) -> Path:
    """CLIPConfig() defaults = ViT-B/32 (vision 768x12, patch 32, 224 px; text 512x12)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from bettersynth_demo.tokenizers import train_clip_tokenizer

    if (out_dir / "config.json").exists():
        return out_dir
    torch.manual_seed(0)
    tokenizer = train_clip_tokenizer(texts)
    config = CLIPConfig(
        text_config=dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    )
    CLIPModel(config).save_pretrained(out_dir)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def bench_bare(model_dir: Path, samples, root: Path, batch_size: int) -> tuple[float, list[float]]:
    """Seconds for the forward alone over every sample, and the scores (for a cross-check)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoProcessor, CLIPModel

    from bettersynth.core.images import load_image

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
    batches = []
    for start in range(0, len(samples), batch_size):
        part = samples[start : start + batch_size]
        texts = [s.chunks()[0][0] for s in part]
        images = [load_image(root / s.images[0]) for s in part]
        batches.append(processor(text=texts, images=images, return_tensors="pt", padding=True, truncation=True))
    scores: list[float] = []
    with torch.inference_mode():
        model.get_image_features(pixel_values=batches[0]["pixel_values"][:2])  # warm-up
        start = time.perf_counter()
        for inputs in batches:
            image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
            text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
            scores += (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1).tolist()
        elapsed = time.perf_counter() - start
    return elapsed, scores


def bench_ours(model_root: Path, jsonl: Path, root: Path, out: Path, batch_size: int, num_workers: int, use_cache: bool = False, min_score: float = -1.0, cache_dir: Path | None = None) -> tuple[float, list[float]]:
    from bettersynth.core.device import resolve_device, resolve_dtype
    from bettersynth.data.jsonl import read_jsonl
    from bettersynth.engine import EngineSettings, load_model
    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.runner import run_recipe

    device = resolve_device(EngineSettings().device)
    load_model("hf_clip", model_root / "clip-b32", device, resolve_dtype("auto", device))  # warm the cache
    # use_cache off: this measures scoring; the cached rerun is measured on its own
    recipe = Recipe.from_dict({"use_cache": use_cache, "process": [{"image_text_similarity_filter": {"hf_clip": "clip-b32", "min_score": min_score}}]})
    start = time.perf_counter()
    report = run_recipe(recipe, jsonl, root, out, model_root=model_root, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir)
    elapsed = time.perf_counter() - start
    if min_score > -1.0:
        return elapsed, []
    if report.kept != report.n_in:
        raise RuntimeError(f"expected every sample kept, got {report}")
    scores = [s.stats["image_text_similarity"][0] for s in read_jsonl(out / "samples.jsonl")]
    return elapsed, scores


def bench_dj(dj_python: str, model_dir: Path, jsonl: Path, out: Path, np_: int) -> dict:
    script = out / "dj_bench.py"
    out.mkdir(parents=True, exist_ok=True)
    script.write_text(DJ_SCRIPT)
    # Data-Juicer resolves image paths relative to the jsonl's folder; run from there.
    result = subprocess.run(
        [dj_python, str(script), str(jsonl), str(model_dir), str(out / "dj_out.jsonl"), str(np_)],
        capture_output=True, text=True, cwd=jsonl.parent, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"Data-Juicer run failed (rc {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _record(best: dict[str, float], label: str, rate: float) -> None:
    best[label] = max(rate, best.get(label, 0.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="generated image-caption pairs")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated PNGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1], help="bettersynth DataLoader workers (one run each)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best of each is reported")
    parser.add_argument("--dj-python", help="python of a venv with py-data-juicer; skipped when absent")
    parser.add_argument("--dj-np", type=int, default=1, help="Data-Juicer processes")
    parser.add_argument("--workdir", type=Path, help="keep data and model here (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from bettersynth.data.jsonl import read_jsonl
    from bettersynth_demo.world import WorldConfig, all_texts, build_world

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ops_"))
    world = build_world(work / "world", WorldConfig(n_seed_samples=args.samples, image_size=args.image_size, n_instruct=2, n_textvqa=2, n_mmbench=2, n_heldout_textvqa=1, n_heldout_mmbench=1))
    model_root = work / "models"
    build_clip_b32(model_root / "clip-b32", all_texts(world))
    root = world.seed_jsonl.parent
    jsonl = root / "samples.jsonl"
    samples = [s for s in read_jsonl(jsonl)]
    n = len(samples)
    print(f"{n} samples, {args.image_size}px PNG, CLIP ViT-B/32 (random weights), batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")

    # Rounds interleave the contenders so a busy machine slows them alike; best round counts.
    best: dict[str, float] = {}
    max_diff = 0.0
    for _ in range(args.rounds):
        bare_s, bare_scores = bench_bare(model_root / "clip-b32", samples, root, args.batch_size)
        _record(best, "bare forward (pre-decoded, pre-batched)", n / bare_s)
        for workers in args.num_workers:
            out = work / "out_ours"
            shutil.rmtree(out, ignore_errors=True)
            ours_s, ours_scores = bench_ours(model_root, jsonl, root, out, args.batch_size, workers)
            _record(best, f"bettersynth run_recipe (workers={workers})", n / ours_s)
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(bare_scores, ours_scores)))
        if args.dj_python:
            try:
                dj = bench_dj(args.dj_python, model_root / "clip-b32", jsonl, work / "out_dj", args.dj_np)
                _record(best, f"Data-Juicer 1.6.1 (np={args.dj_np})", dj["n"] / dj["seconds"])
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"Data-Juicer: not measured ({exc})")
    if not args.dj_python:
        print("Data-Juicer: not measured (no --dj-python)")
    # The score cache: fill it once, then rerun with only the threshold changed.
    cache_dir = work / "score_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    bench_ours(model_root, jsonl, root, work / "out_fill", args.batch_size, args.num_workers[-1], use_cache=True, cache_dir=cache_dir)
    rerun_s, _ = bench_ours(model_root, jsonl, root, work / "out_rerun", args.batch_size, args.num_workers[-1], use_cache=True, min_score=0.0, cache_dir=cache_dir)
    rows = list(best.items()) + [("bettersynth rerun, threshold changed (cache)", n / rerun_s)]
    print(f"\n{'':44}{'samples/s':>10}{'x bare':>8}")
    for label, rate in rows:
        print(f"{label:44}{rate:10.2f}{rate / rows[0][1]:8.2f}")
    dj_rows = [rate for label, rate in rows if label.startswith("Data-Juicer")]
    if dj_rows:
        for label, rate in rows[1:]:
            if label.startswith("bettersynth"):
                print(f"{label} / Data-Juicer: {rate / dj_rows[0]:.2f}x")
    print(f"max |score(ours) - score(bare)| = {max_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
