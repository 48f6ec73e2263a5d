"""Training throughput: bettersynth's ``train_stage`` against a plain HF ``Trainer`` loop, in one process.

Why: the platform's trainer must add no overhead to the model's own cost
(target >= 0.95x the HF Trainer's samples/s), and the data loader must not
starve the step. Both trainers run the same model (a small LLaVA: CLIP tower +
4-layer Llama at width 256, random weights, built offline), the same
``LlavaDataset``/``LlavaCollator`` examples, the same frozen parts (stage 2:
projector + LLM train), batch size, accumulation, AdamW and LR. Throughput is
timed from the end of the first optimizer step to the end of the last
(warm-up excluded) by per-step callbacks in both; runs alternate
(ours, HF, ours, HF, ...) and the medians are compared.

    python benchmarks/bench_train.py --samples 96 --repeats 3 --markdown benchmarks/results/train.md
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bettersynth.train import defaults_for, freeze_for_stage, train_stage
from bettersynth.vlm.inputs import LlavaCollator, LlavaDataset
from bettersynth_demo.models import _clip_image_processor
from bettersynth_demo.tokenizers import train_lm_tokenizer

COLORS = ["red", "green", "blue", "yellow", "black", "purple"]
SHAPES = ["square", "circle"]


def build_data(root: Path, n: int) -> list[dict]:
    """Two-turn conversations about generated 32 px images."""
    records = []
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        color, shape = COLORS[i % len(COLORS)], SHAPES[(i // len(COLORS)) % 2]
        image = Image.new("RGB", (32, 32), "white")
        draw = ImageDraw.Draw(image)
        (draw.rectangle if shape == "square" else draw.ellipse)((4 + i % 5, 4, 26, 26), fill=color)
        image.save(root / "imgs" / f"{i}.png")
        caption = f"a {color} {shape} on a white background, number {i} of the set, drawn slightly off centre"
        records.append({"id": f"s{i}", "image": f"imgs/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in detail."},
            {"from": "gpt", "value": caption},
            {"from": "human", "value": "What color is the shape?"},
            {"from": "gpt", "value": f"The shape is {color}."},
        ]})
    return records


def build_model(out: Path, records: list[dict]) -> Path:
    """A small-but-not-pico LLaVA: ~10M parameters, the compute of a real step at toy scale."""
    torch.manual_seed(0)
    texts = [t["value"] for r in records for t in r["conversations"]]
    tokenizer = train_lm_tokenizer(texts * 4, vocab_size=1000)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                       num_attention_heads=4, image_size=32, patch_size=4),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024,
                                num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                                max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=64,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    LlavaForConditionalGeneration(config).save_pretrained(out)
    LlavaProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer, patch_size=4,
                   vision_feature_select_strategy="default", chat_template=tokenizer.chat_template,
                   image_token="<image>", num_additional_image_tokens=1).save_pretrained(out)
    return out


def _throughput(step_ends: list[float], samples_per_step: list[int]) -> float:
    """Samples/s from the end of step 1 to the end of the last step."""
    return sum(samples_per_step[1:]) / (step_ends[-1] - step_ends[0])


def run_ours(model_dir: Path, records: list[dict], image_root: Path, args, out: Path) -> dict:
    config = defaults_for("finetune", global_batch_size=args.batch * args.accumulation, per_device_batch_size=args.batch,
                          learning_rate=1e-4, max_length=256, num_workers=args.num_workers, warmup_ratio=0.0)
    ends, sizes, waits = [], [], []

    def on_step(step, metrics):
        ends.append(time.perf_counter())
        sizes.append(args.batch * args.accumulation)
        waits.append(metrics["data_wait_fraction"])

    train_stage(model_dir, records, image_root, config, out, on_step=on_step)
    return {"samples_per_s": _throughput(ends, sizes), "data_wait": statistics.mean(waits[1:])}


class _Timer(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


class _HFCollator(LlavaCollator):
    def __call__(self, examples):
        batch = super().__call__(examples)
        batch.pop("ids")
        return batch


def run_hf(model_dir: Path, records: list[dict], image_root: Path, args, out: Path) -> dict:
    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    freeze_for_stage(model, "finetune")
    dataset = LlavaDataset(records, image_root, processor, "chat", 256, "pad")
    timer = _Timer()
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.accumulation,
        learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=0, num_train_epochs=1, max_grad_norm=1.0,
        weight_decay=0.0, logging_strategy="no", save_strategy="no", report_to=[], seed=42,
        dataloader_num_workers=args.num_workers, remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=_HFCollator(processor.tokenizer.pad_token_id), callbacks=[timer])
    trainer.train()
    steps = len(timer.ends)
    sizes = [args.batch * args.accumulation] * steps
    sizes[-1] = len(records) - args.batch * args.accumulation * (steps - 1)
    return {"samples_per_s": _throughput(timer.ends, sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = build_data(root / "data", args.samples)
        model_dir = build_model(root / "model", records)
        n_params = sum(p.numel() for p in LlavaForConditionalGeneration.from_pretrained(model_dir).parameters())
        ours, hf = [], []
        for r in range(args.repeats):
            ours.append(run_ours(model_dir, records, root / "data", args, root / f"ours{r}"))
            hf.append(run_hf(model_dir, records, root / "data", args, root / f"hf{r}"))
            print(f"round {r + 1}: bettersynth {ours[-1]['samples_per_s']:.2f} samples/s, "
                  f"HF Trainer {hf[-1]['samples_per_s']:.2f} samples/s, data wait {ours[-1]['data_wait']:.1%}")
    ours_sps = statistics.median(o["samples_per_s"] for o in ours)
    hf_sps = statistics.median(h["samples_per_s"] for h in hf)
    wait = statistics.median(o["data_wait"] for o in ours)
    rows = [
        "| trainer | samples/s (median of %d) | ratio vs HF Trainer |" % args.repeats,
        "|---|---|---|",
        f"| HF `Trainer` (baseline) | {hf_sps:.2f} | 1.00 |",
        f"| bettersynth `train_stage` | {ours_sps:.2f} | {ours_sps / hf_sps:.2f} |",
    ]
    setup = (f"model: LLaVA, {n_params / 1e6:.1f}M params (CLIP 4x128 @ 32 px / 4 px patches, Llama 4x256), stage 2 "
             f"(projector + LLM train); {args.samples} two-turn samples, batch {args.batch} x accumulation "
             f"{args.accumulation}, fp32, {args.num_workers} loader workers, {args.threads} torch threads; "
             f"{platform.processor() or platform.machine()}, CUDA: {torch.cuda.is_available()}")
    table = "\n".join(rows)
    print(table)
    print(f"data-loader wait: {wait:.1%} of step time")
    print(setup)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            "# Training throughput\n\n`python benchmarks/bench_train.py "
            f"--samples {args.samples} --repeats {args.repeats} --num-workers {args.num_workers}`\n\n"
            f"{table}\n\nData-loader wait (bettersynth, median over steps 2..N): {wait:.1%} of step time.\n\n"
            f"Setup: {setup}.\n"
        )


if __name__ == "__main__":
    main()
