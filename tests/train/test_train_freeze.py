import pytest
from transformers import LlavaForConditionalGeneration

from bettersynth.train import count_params, freeze_for_stage


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def model(llava_dir):
    return LlavaForConditionalGeneration.from_pretrained(llava_dir)


def test_align_trains_only_the_projector(model):
    counts = freeze_for_stage(model, "align")
    inner = model.model
    assert counts.trainable == _numel(inner.multi_modal_projector) > 0
    assert counts.total == _numel(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)


def test_finetune_trains_projector_and_llm_not_vision(model):
    freeze_for_stage(model, "align")  # the stage switch must also re-open what align closed
    counts = freeze_for_stage(model, "finetune")
    inner = model.model
    expected = _numel(inner.multi_modal_projector) + _numel(inner.language_model) + _numel(model.lm_head)
    assert counts.trainable == expected
    assert counts.total - counts.trainable == _numel(inner.vision_tower)
    assert not any(p.requires_grad for p in inner.vision_tower.parameters())
    assert model.lm_head.weight.requires_grad
    assert count_params(model) == counts


def test_unknown_stage_is_refused(model):
    with pytest.raises(ValueError, match="pretrain"):
        freeze_for_stage(model, "pretrain")
