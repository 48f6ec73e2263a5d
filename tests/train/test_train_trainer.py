from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from bettersynth.train import defaults_for, plan_steps, train_stage
from bettersynth.vlm.inputs import IGNORE_INDEX, LlavaCollator, LlavaDataset

TINY = dict(global_batch_size=8, per_device_batch_size=4, num_epochs=2, max_length=128, seed=7)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def test_plan_covers_every_sample_with_a_partial_last_step():
    config = defaults_for("align", per_device_batch_size=32, num_epochs=2)  # global 256 -> accumulation 8
    plan = plan_steps(300, config)
    assert len(plan) == 4  # 256 + 44 per epoch
    assert [sum(len(m) for m in step) for step in plan] == [256, 44, 256, 44]
    assert [len(step) for step in plan] == [8, 2, 8, 2] and [len(m) for m in plan[1]] == [32, 12]
    for epoch in (plan[:2], plan[2:]):
        assert sorted(i for step in epoch for micro in step for i in micro) == list(range(300))
    assert plan != plan_steps(300, config.model_copy(update={"seed": 1}))
    assert plan == plan_steps(300, config)
    assert len(plan_steps(16, defaults_for("align"))) == 1  # global batch larger than the data: one step
    assert len(plan_steps(300, config.model_copy(update={"max_steps": 3}))) == 3


@pytest.fixture(scope="module")
def align_run(llava_dir, caption_records, image_root, tmp_path_factory):
    config = defaults_for("align", learning_rate=1e-2, **TINY)
    seen = []
    out = tmp_path_factory.mktemp("align")
    result = train_stage(llava_dir, caption_records, image_root, config, out, on_step=lambda s, m: seen.append((s, m)))
    return result, seen


def test_align_changes_only_the_projector(align_run, llava_dir):
    result, seen = align_run
    assert result.steps == 4 and result.samples_seen == 32 and len(result.losses) == 4
    assert result.losses[-1] < result.losses[0]
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert set(seen[0][1]) == {"loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "data_wait_fraction"}
    assert all(0 <= m["data_wait_fraction"] <= 1 for _, m in seen)
    assert [m["loss"] for _, m in seen] == result.losses
    before, after = weights(llava_dir), weights(result.out_dir)
    assert before.keys() == after.keys()
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == ("multi_modal_projector" in name), name
    projector = sum(t.numel() for n, t in before.items() if "multi_modal_projector" in n)
    assert result.trainable_params == projector
    assert result.total_params == sum(t.numel() for t in before.values())


def test_saved_model_loads_and_runs(align_run, caption_records, image_root):
    out = align_run[0].out_dir
    model = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    example = LlavaDataset(caption_records[:1], image_root, processor, "plain", 128)[0]
    batch = LlavaCollator(processor.tokenizer.pad_token_id)([example])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
    assert torch.isfinite(logits).all()
    assert (out / "bettersynth_training.json").exists()


def test_same_seed_gives_identical_weights(align_run, llava_dir, caption_records, image_root, tmp_path):
    config = defaults_for("align", learning_rate=1e-2, **TINY)
    again = train_stage(llava_dir, caption_records, image_root, config, tmp_path)
    first = weights(align_run[0].out_dir)
    second = weights(again.out_dir)
    assert again.losses == align_run[0].losses
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_finetune_trains_llm_and_projector_but_not_vision(llava_dir, chat_records, image_root, tmp_path):
    config = defaults_for("finetune", learning_rate=3e-3, **TINY)
    result = train_stage(llava_dir, chat_records, image_root, config, tmp_path)
    assert result.losses[-1] < result.losses[0] - 0.1
    before, after = weights(llava_dir), weights(result.out_dir)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == ("vision_tower" not in name), name


def test_accumulation_matches_one_big_batch(llava_dir, caption_records, image_root, tmp_path):
    """4 x 2 accumulated micro-batches and one batch of 8 take the same step (token-mean loss).

    Caption lengths are powers of two, so no two micro-batches hold as many labelled
    tokens: a mean of per-micro-batch means would give a different gradient.
    """
    records = [
        dict(r, conversations=[r["conversations"][0], {"from": "gpt", "value": "a" + " red" * 2**i}])
        for i, r in enumerate(caption_records[:8])
    ]
    base = dict(global_batch_size=8, num_epochs=1, max_steps=1, max_length=256, seed=3, learning_rate=1e-2)
    norms = {}
    split = train_stage(llava_dir, records, image_root, defaults_for("align", per_device_batch_size=4, **base),
                        tmp_path / "split", on_step=lambda s, m: norms.setdefault("split", m["grad_norm"]))
    whole = train_stage(llava_dir, records, image_root, defaults_for("align", per_device_batch_size=8, **base),
                        tmp_path / "whole", on_step=lambda s, m: norms.setdefault("whole", m["grad_norm"]))
    assert split.losses[0] == pytest.approx(whole.losses[0], rel=1e-5)
    assert norms["split"] == pytest.approx(norms["whole"], rel=1e-4)
    a, b = weights(split.out_dir), weights(whole.out_dir)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_step_loss_is_the_token_mean_hf_computes(llava_dir, caption_records, image_root, tmp_path):
    """The first step's loss equals transformers' own causal-LM loss on the same batch."""
    config = defaults_for("align", per_device_batch_size=4, global_batch_size=8, max_steps=1, max_length=128)
    metrics = []
    result = train_stage(llava_dir, caption_records[:8], image_root, config, tmp_path,
                         on_step=lambda s, m: metrics.append(m))
    processor = AutoProcessor.from_pretrained(llava_dir)
    model = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    dataset = LlavaDataset(caption_records[:8], image_root, processor, "plain", 128)
    order = [i for micro in plan_steps(8, config)[0] for i in micro]
    batch = LlavaCollator(processor.tokenizer.pad_token_id)([dataset[i] for i in order])
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    reference.backward()
    reference = reference.detach()
    projector = model.model.multi_modal_projector.parameters()
    grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in projector]))
    assert result.losses[0] == pytest.approx(float(reference), rel=1e-5)
    assert metrics[0]["grad_norm"] == pytest.approx(float(grad_norm), rel=1e-4)
    assert (batch["labels"] != IGNORE_INDEX).sum() > 0
