"""open_clip towers in the builders: a ViT converted exactly to HF CLIP, a ConvNeXt as the Mini-Gemini aux tower."""

import json
import shutil
from pathlib import Path

import open_clip
import pytest
import torch

from bettersynth.train import defaults_for, freeze_for_stage, train_stage
from bettersynth.vlm import load_vlm
from bettersynth.vlm.aux_tower import AuxTowerSpec, build_aux_tower
from bettersynth.vlm.builder import build_llava, build_mini_gemini, load_vision_tower


def test_open_clip_vit_converts_exactly(pico_open_clip):
    reference = open_clip.create_model(f"local-dir:{pico_open_clip['vit']}").eval()
    tower, image_processor = load_vision_tower(f"local-dir:{pico_open_clip['vit']}")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = reference.visual(pixels)  # ln_post(class token) @ proj
        got = tower(pixels).pooler_output @ reference.visual.proj
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert tower.config.num_hidden_layers == 2 and tower.config.hidden_size == 32 and tower.config.patch_size == 8
    assert image_processor.crop_size == {"height": 32, "width": 32}
    assert image_processor.image_mean == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))
    # A folder holding open_clip_config.json is recognised without the schema prefix too.
    assert load_vision_tower(pico_open_clip["vit"])[0].config.hidden_size == 32


def test_open_clip_towers_that_do_not_convert_are_refused(pico_open_clip, tmp_path):
    with pytest.raises(ValueError, match="convnext_atto.*not a ViT"):
        load_vision_tower(f"local-dir:{pico_open_clip['convnext']}")
    odd = shutil.copytree(pico_open_clip["vit"], tmp_path / "layer-scale")
    config = json.loads((odd / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["ls_init_value"] = 1e-5
    (odd / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ls_init_value"):
        load_vision_tower(f"local-dir:{odd}")
    with pytest.raises(ValueError, match="no open_clip_config.json"):
        load_vision_tower(f"local-dir:{tmp_path}")


@pytest.fixture(scope="module")
def oc_llava(pico_open_clip, lm_dir, tmp_path_factory) -> Path:
    return build_llava(f"local-dir:{pico_open_clip['vit']}", lm_dir, tmp_path_factory.mktemp("oc") / "llava")


def test_llava_from_open_clip_vit_freezes_and_trains_the_projector(oc_llava, pico_open_clip, caption_records,
                                                                     image_root, tmp_path):
    model = load_vlm(oc_llava).model
    reference = open_clip.create_model(f"local-dir:{pico_open_clip['vit']}").eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # the saved tower is still the open_clip one
        got = model.model.vision_tower(pixels).pooler_output @ reference.visual.proj
        torch.testing.assert_close(got, reference.visual(pixels), rtol=1e-5, atol=1e-5)
    counts = freeze_for_stage(model, "align")
    assert counts.trainable == 64 * 32 + 64 + 64 * 64 + 64  # mlp2x_gelu: vision 32 -> 64 -> 64
    features = model.model.get_image_features(pixel_values=pixels).pooler_output
    assert features[0].shape == (16, 64)  # (32 / 8)^2 patches, CLS dropped, LLM width
    config = defaults_for("align", global_batch_size=4, per_device_batch_size=2, max_steps=1, max_length=64)
    result = train_stage(oc_llava, caption_records, image_root, config, tmp_path)
    assert result.steps == 1 and torch.isfinite(torch.tensor(result.losses)).all()


def test_mini_gemini_with_open_clip_towers(pico_open_clip, lm_dir, tmp_path):
    spec = AuxTowerSpec.from_open_clip_dir(f"local-dir:{pico_open_clip['convnext']}", image_size=64)
    assert spec.checkpoint.endswith("open_clip_model.safetensors") and spec.model_cfg["vision_cfg"]["timm_model_name"]
    out = build_mini_gemini(f"local-dir:{pico_open_clip['vit']}", lm_dir, spec, tmp_path / "mgm")
    saved = json.loads((out / "config.json").read_text())["aux_tower"]
    assert saved["checkpoint"] is None and saved["model_cfg"] == spec.model_cfg  # loads without the folder
    model = load_vlm(out).model
    trunk = open_clip.create_model(f"local-dir:{pico_open_clip['convnext']}").visual.trunk.state_dict()
    assert model.model.aux_tower.trunk.state_dict().keys() == trunk.keys()
    assert all(torch.equal(t, trunk[n]) for n, t in model.model.aux_tower.trunk.state_dict().items())
    assert model.model.aux_tower(torch.randn(1, 3, 64, 64)).shape == (1, 600, 16, 16)  # atto: 40+80+160+320 at /4

    counts = freeze_for_stage(model, "align")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.patch_mining", "model.multi_modal_projector")) for n in trainable)
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    image_id = model.config.image_token_index
    input_ids = torch.cat([torch.full((2, 16), image_id), torch.randint(5, 50, (2, 6))], dim=1)
    labels = input_ids.clone()
    labels[:, :16] = -100
    model(input_ids=input_ids, pixel_values=torch.randn(2, 3, 64, 64), labels=labels).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
        if name in trainable:
            assert p.grad.abs().sum() > 0, name


def test_aux_checkpoint_that_does_not_fit_is_refused(pico_open_clip, tmp_path):
    spec = AuxTowerSpec.from_open_clip_dir(pico_open_clip["convnext"], image_size=64)
    with pytest.raises(ValueError, match="does not fit"):
        build_aux_tower(spec.model_copy(update={"checkpoint": str(pico_open_clip["vit"] / "open_clip_model.safetensors")}))
    real = build_aux_tower(AuxTowerSpec(preset="convnext_base", image_size=64,
                                        overrides={"vision_cfg": {"timm_model_name": "convnext_atto"}}))
    assert real.channels == 600  # every stage, as Mini-Gemini reads it
