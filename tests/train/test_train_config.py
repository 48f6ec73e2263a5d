import pytest
import torch

from bettersynth.core.device import resolve_dtype
from bettersynth.train import StageConfig, defaults_for


def test_stage_defaults_follow_the_recipe():
    align, finetune = defaults_for("align"), defaults_for("finetune")
    assert (align.learning_rate, align.global_batch_size) == (1e-3, 256)
    assert (finetune.learning_rate, finetune.global_batch_size) == (2e-5, 128)
    assert align.warmup_ratio == 0.03 and align.lr_schedule == "cosine" and align.max_length == 2048
    assert align.weight_decay == 0.0 and align.max_grad_norm == 1.0 and align.num_epochs == 1


@pytest.mark.parametrize(
    ("global_bs", "per_device", "world", "accum"),
    [(256, 32, 1, 8), (256, 16, 8, 2), (128, 4, 2, 16), (8, 8, 1, 1)],
)
def test_accumulation_is_derived(global_bs, per_device, world, accum):
    config = defaults_for(
        "align", global_batch_size=global_bs, per_device_batch_size=per_device, world_size=world
    )
    assert config.gradient_accumulation_steps == accum
    assert config.per_device_batch_size * config.gradient_accumulation_steps * config.world_size == global_bs


@pytest.mark.parametrize(("global_bs", "per_device", "world"), [(256, 24, 1), (128, 16, 3), (10, 4, 1)])
def test_unreachable_global_batch_is_refused_with_the_numbers(global_bs, per_device, world):
    with pytest.raises(ValueError) as info:
        StageConfig(stage="finetune", global_batch_size=global_bs, per_device_batch_size=per_device, world_size=world)
    message = str(info.value)
    for text in (f"global_batch_size {global_bs}", f"per_device_batch_size {per_device}", f"world_size {world}"):
        assert text in message


def test_explicit_values_override_stage_defaults_and_unknown_fields_fail():
    assert defaults_for("align", learning_rate=5e-4).learning_rate == 5e-4
    assert StageConfig.for_stage("finetune", seed=3) == defaults_for("finetune", seed=3)
    with pytest.raises(ValueError, match="learning_rat"):
        StageConfig(stage="align", learning_rat=1.0)
    with pytest.raises(ValueError, match="stage"):
        StageConfig(stage="pretrain")


def test_auto_dtype_is_bf16_on_cuda_only():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("fp32", torch.device("cuda")) == torch.float32
