"""Training throughput: ``train_stage`` vs HF ``Trainer`` vs a plain PyTorch loop, at equal settings.

Why: the platform's trainer must add no overhead to the model's own cost:
target >= 1.0x the HF ``Trainer``'s samples/s and within 5 % of the plain loop
a competent engineer would write (DataLoader, forward, loss / accumulation,
backward, clip, AdamW, cosine LR). All three train the same model (a small
LLaVA: CLIP tower + 4-layer Llama at width 256, random weights, built
offline) on the same ``LlavaDataset``/``LlavaCollator`` examples with the same
frozen parts (stage 2: projector + LLM train), batch size, accumulation,
AdamW, LR and clipping. Throughput runs from the end of the first optimizer
step to the end of the last (warm-up excluded). Each contender runs in a fresh
interpreter, interleaved over ``--rounds`` (benchmarks/harness.py).

    python benchmarks/bench_train.py --samples 96 --rounds 3 --json benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import Contender, compare, emit, load_average, run_rounds, write_json
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

TRAINER_TARGET = 1.0  # ours / HF Trainer samples per second
PLAIN_TARGET = 0.95  # ours / plain loop samples per second: within 5 %
MODES = ("ours", "hf", "plain")

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


class _Steps:
    """Wall and CPU clock at the end of each optimizer step, and the samples it took."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.sizes: list[int] = []

    def mark(self, samples: int) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.sizes.append(samples)

    def result(self, **extra: float) -> dict:
        """Samples/s from the end of step 1 to the end of the last step (warm-up excluded)."""
        if len(self.wall) < 2:
            raise RuntimeError("need at least 2 optimizer steps to time (raise --samples)")
        samples = sum(self.sizes[1:])
        return {"samples_per_s": samples / (self.wall[-1] - self.wall[0]),
                "samples_per_cpu_s": samples / (self.cpu[-1] - self.cpu[0]), "steps": len(self.wall), **extra}


def run_ours(model_dir: Path, records: list[dict], image_root: Path, args, out: Path) -> dict:
    config = defaults_for("finetune", global_batch_size=args.batch * args.accumulation, per_device_batch_size=args.batch,
                          learning_rate=1e-4, max_length=256, num_workers=args.num_workers, warmup_ratio=0.0)
    steps, waits = _Steps(), []

    def on_step(step, metrics):
        steps.mark(args.batch * args.accumulation)
        waits.append(metrics["data_wait_fraction"])

    train_stage(model_dir, records, image_root, config, out, on_step=on_step)
    return steps.result(data_wait=statistics.mean(waits[1:]))


class _Timer(TrainerCallback):
    def __init__(self, steps: _Steps, per_step: int) -> None:
        self.steps, self.per_step = steps, per_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.mark(self.per_step)


class _HFCollator(LlavaCollator):
    def __call__(self, examples):
        batch = super().__call__(examples)
        batch.pop("ids")
        return batch


def _model_and_data(model_dir: Path, records: list[dict], image_root: Path):
    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    freeze_for_stage(model, "finetune")
    return model, processor, LlavaDataset(records, image_root, processor, "chat", 256, "pad")


def run_hf(model_dir: Path, records: list[dict], image_root: Path, args, out: Path) -> dict:
    model, processor, dataset = _model_and_data(model_dir, records, image_root)
    steps = _Steps()
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.accumulation,
        learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=0, num_train_epochs=1, max_grad_norm=1.0,
        weight_decay=0.0, logging_strategy="no", save_strategy="no", report_to=[], seed=42,
        dataloader_num_workers=args.num_workers, remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=_HFCollator(processor.tokenizer.pad_token_id), callbacks=[_Timer(steps, 0)])
    trainer.train()
    steps.sizes = [args.batch * args.accumulation] * len(steps.wall)
    steps.sizes[-1] = len(records) - args.batch * args.accumulation * (len(steps.wall) - 1)
    return steps.result()


def run_plain(model_dir: Path, records: list[dict], image_root: Path, args, out: Path) -> dict:
    """What a competent engineer writes without a framework: the loop, nothing else."""
    model, processor, dataset = _model_and_data(model_dir, records, image_root)
    torch.manual_seed(42)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.num_workers,
                                         collate_fn=_HFCollator(processor.tokenizer.pad_token_id))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    total = math.ceil(len(loader) / args.accumulation)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    steps = _Steps()
    model.train()
    taken = 0
    for index, batch in enumerate(loader):
        loss = model(**batch).loss / args.accumulation
        loss.backward()
        taken += len(batch["input_ids"])
        if (index + 1) % args.accumulation == 0 or index + 1 == len(loader):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            steps.mark(taken)
            taken = 0
    return steps.result()


def child(args) -> None:
    torch.set_num_threads(args.threads)
    records = json.loads((args.data / "records.json").read_text())
    run = {"ours": run_ours, "hf": run_hf, "plain": run_plain}[args.child]
    emit(run(args.model, records, args.data, args, args.out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the ratios here (for harness.py table)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(args)
        return
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        records = build_data(root / "data", args.samples)
        (root / "data" / "records.json").write_text(json.dumps(records))
        model_dir = build_model(root / "model", records)
        n_params = sum(p.numel() for p in LlavaForConditionalGeneration.from_pretrained(model_dir).parameters())
        common = ["--data", str(root / "data"), "--model", str(model_dir), "--batch", str(args.batch),
                  "--accumulation", str(args.accumulation), "--num-workers", str(args.num_workers),
                  "--threads", str(args.threads), "--out", str(root / "out")]
        modes = MODES
        if importlib.util.find_spec("accelerate") is None:  # HF Trainer needs it: pip install -e ".[bench]"
            print("hf: skipped (HF Trainer needs accelerate; install the project's [bench] extra)")
            modes = tuple(m for m in MODES if m != "hf")
        contenders = [Contender(mode, [sys.executable, __file__, "--child", mode, *common]) for mode in modes]
        results = run_rounds(contenders, args.rounds, before_each=lambda _: shutil.rmtree(root / "out", ignore_errors=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    label = f"train stage 2, {args.samples} samples"
    ratios = [compare(results, "ours", "plain", "samples_per_s", ">=", PLAIN_TARGET, label),
              compare(results, "ours", "plain", "samples_per_cpu_s", label=label)]
    if "hf" in results:
        ratios += [compare(results, "ours", "hf", "samples_per_s", ">=", TRAINER_TARGET, label),
                   compare(results, "ours", "hf", "samples_per_cpu_s", label=label)]
    for ratio in ratios:
        print(ratio.line())
    wait = statistics.median(r["data_wait"] for r in results["ours"])
    setup = (f"LLaVA, {n_params / 1e6:.1f}M params (CLIP 4x128 @ 32 px / 4 px patches, Llama 4x256), stage 2 "
             f"(projector + LLM train); {args.samples} two-turn samples, batch {args.batch} x accumulation "
             f"{args.accumulation}, fp32, {args.num_workers} loader workers, {args.threads} torch threads; "
             f"{platform.machine()}, CUDA: {torch.cuda.is_available()}; data-loader wait (ours) {wait:.1%} of step time")
    print(setup)
    print(f"load average after: {load_average()}")
    if args.json:
        command = (f"python benchmarks/bench_train.py --samples {args.samples} --rounds {args.rounds} "
                   f"--num-workers {args.num_workers} --threads {args.threads}")
        write_json(args.json, "Training throughput", command, ratios, load_before, setup + ".")


if __name__ == "__main__":
    main()
