"""GPU check: a Mini-Gemini of MGM-2B's shape (fewer layers) trains under ZeRO-2 + bf16 and answers 200 questions.

Why: CI has no GPU, so the CUDA paths (DeepSpeed's fused ops, NCCL, bf16 autocast,
the aux tower at 768 px) are checked here whenever a GPU is lent. Everything is
built offline from configs with random weights: the widths, heads, vocabulary and
resolutions are MGM-2B's (gemma-2b LM, CLIP ViT-L/14-336, ConvNeXt-L aux at 768 px),
only the depth is reduced so that it fits in minutes. Numbers are throughput and
memory, not quality.

Run (one H100/H200, no network, about 3-8 minutes)::

    .venv/bin/python benchmarks/gpu_check_mgm.py --steps 20 --questions 200
    .venv/bin/python benchmarks/gpu_check_mgm.py --tiny     # CPU smoke run of the same code (pico sizes)

Prints one JSON line: samples/s and tokens/s of training (median over the steps
after the first), peak GPU memory, evaluation questions/s and the TextVQA score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, GemmaConfig, GemmaForCausalLM

from bettersynth.eval import TextVQA, evaluate
from bettersynth.train import defaults_for, train_stage
from bettersynth.train.deepspeed import DeepSpeedSettings
from bettersynth.vlm.aux_tower import AuxTowerSpec
from bettersynth.vlm.builder import build_mini_gemini
from bettersynth_demo.tokenizers import train_lm_tokenizer
from bettersynth_demo.world import WorldConfig, all_texts, build_world

# MGM-2B's parts (DOMAIN.md section 4): CLIP ViT-L/14-336, gemma-2b, ConvNeXt-L (open_clip convnext_large_d_320) at 768 px.
FULL = {
    "clip": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, image_size=336, patch_size=14,
                 projection_dim=768),
    "lm": dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_attention_heads=8,
               num_key_value_heads=1, head_dim=256),
    "aux": AuxTowerSpec(preset="convnext_large_d_320", image_size=768),
}
# The same code at pico size, for a CPU smoke run (--tiny).
TINY = {
    "clip": dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, image_size=32, patch_size=8,
                 projection_dim=32),
    "lm": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_attention_heads=4,
               num_key_value_heads=1, head_dim=16),
    "aux": AuxTowerSpec(preset="convnext_base", image_size=64,
                        overrides={"embed_dim": 16, "vision_cfg": {"timm_model_name": "convnext_atto"},
                                   "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                                                "layers": 1}}),
}


def build_model(root: Path, texts: list[str], shape: dict, clip_layers: int, lm_layers: int) -> Path:
    """The CLIP tower, the Gemma LM and the Mini-Gemini built from them, saved as a user's folders are."""
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(num_hidden_layers=clip_layers, **shape["clip"]))
    clip.save_pretrained(root / "clip")
    size = shape["clip"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        root / "clip")
    tokenizer = train_lm_tokenizer(texts, vocab_size=800)
    lm = GemmaForCausalLM(GemmaConfig(
        num_hidden_layers=lm_layers, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape["lm"]))
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return build_mini_gemini(root / "clip", root / "lm", shape["aux"], root / "mgm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of stage 2 (projector + LLM)")
    parser.add_argument("--questions", type=int, default=200, help="TextVQA questions to answer")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--clip-layers", type=int, default=4, help="of ViT-L's 24")
    parser.add_argument("--lm-layers", type=int, default=2, help="of gemma-2b's 18")
    parser.add_argument("--tiny", action="store_true", help="pico sizes on CPU: checks the script, not the GPU")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the models and data go (default: a temp dir)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        parser.error("no CUDA device: this is the GPU check (use --tiny for a CPU smoke run)")
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    shape = TINY if args.tiny else FULL

    started = time.perf_counter()
    n_train = args.global_batch * args.steps
    world = build_world(root / "world", WorldConfig(n_seed_samples=64, n_instruct=n_train, n_textvqa=args.questions,
                                                    n_mmbench=4, n_heldout_textvqa=2, n_heldout_mmbench=2))
    model_dir = build_model(root / "models", all_texts(world), shape, args.clip_layers, args.lm_layers)
    built = time.perf_counter() - started

    records = json.loads(world.instruct_json.read_text())
    config = defaults_for("finetune", global_batch_size=args.global_batch, per_device_batch_size=args.per_device_batch,
                          max_steps=args.steps, max_length=512 if not args.tiny else 192,
                          dtype="bf16" if cuda else "fp32")
    rows: list[dict] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_stage(model_dir, records, world.instruct_json.parent, config, root / "finetuned",
                         on_step=lambda step, metrics: rows.append(metrics),
                         deepspeed=DeepSpeedSettings(enabled="on"))
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    benchmark = TextVQA(world.textvqa.questions, world.textvqa.annotations, world.textvqa.images)
    mark = time.perf_counter()
    scores = evaluate(result.out_dir, benchmark, batch_size=16, max_new_tokens=8)
    eval_seconds = time.perf_counter() - mark
    after_first = rows[1:] or rows
    print(json.dumps({
        "device": torch.cuda.get_device_name() if cuda else "cpu (--tiny)",
        "shape": "tiny" if args.tiny else f"MGM-2B widths, CLIP {args.clip_layers}/24 layers, gemma {args.lm_layers}/18",
        "steps": result.steps,
        "samples_per_s": round(statistics.median(r["samples_per_s"] for r in after_first), 2),
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in after_first), 1),
        "final_loss": round(result.losses[-1], 4),
        "train_peak_gib": round(train_peak, 2) if train_peak is not None else None,
        "eval_questions": len(benchmark.items()),
        "eval_questions_per_s": round(len(benchmark.items()) / eval_seconds, 2),
        "textvqa_accuracy": scores.metrics["textvqa_accuracy"],
        "build_s": round(built, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
