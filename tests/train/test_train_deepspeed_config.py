"""The generated ZeRO-2 JSON passes DeepSpeed's own config parser (needs the ``gpu`` extra; runs on CPU)."""

import pytest

from bettersynth.train import defaults_for
from bettersynth.train.deepspeed import DeepSpeedSettings, deepspeed_config

pytest.importorskip("deepspeed")
from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402  (after the skip)


@pytest.mark.parametrize("stage", ["align", "finetune"])
@pytest.mark.parametrize("offload", [False, True])
def test_deepspeed_parses_our_config(stage, offload):
    stage_config = defaults_for(stage, per_device_batch_size=8)
    parsed = DeepSpeedConfig(deepspeed_config(stage_config, DeepSpeedSettings(offload_optimizer=offload)))
    assert parsed.train_batch_size == stage_config.global_batch_size
    assert parsed.train_micro_batch_size_per_gpu == 8
    assert parsed.gradient_accumulation_steps == stage_config.gradient_accumulation_steps
    assert parsed.zero_optimization_stage == 2 and parsed.gradient_clipping == 1.0
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    offloaded = parsed.zero_config.offload_optimizer
    assert (offloaded is not None and offloaded.device == "cpu" and offloaded.pin_memory) == offload
    assert (parsed.optimizer_name == "adamw") == offload  # DeepSpeedCPUAdam is built from this section


def test_deepspeed_checks_the_batch_against_the_real_world_size():
    # Written for 2 processes but parsed in 1: DeepSpeed refuses, which is why the trainer uses the group's size.
    config = deepspeed_config(defaults_for("align", world_size=2, per_device_batch_size=32), DeepSpeedSettings())
    with pytest.raises(AssertionError, match="256 != 32 \\* 4 \\* 1"):
        DeepSpeedConfig(config)
