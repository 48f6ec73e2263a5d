"""Mini-Gemini checkpoints in the original MGM code's layout (dvlab-research/MGM), imported and exported.

The MGM names and config keys below are stated once, from MGM's sources:
``mgm/model/mgm_arch.py`` (MGMMetaModel: ``vision_tower``, ``vision_tower_aux``, ``mm_projector``, the three
``vlm_uni_*_projector`` as LayerNorm + Linear, and the ``mm_*``/``image_size_aux``/``optimize_*`` keys),
``mgm/model/multimodal_encoder/clip_encoder.py`` (an HF ``CLIPVisionModel`` held as ``.vision_tower``),
``mgm/model/multimodal_encoder/openclip_encoder.py`` (the timm ConvNeXt trunk's ``stem``/``stages`` held as
``.vision_stem``/``.vision_stages``, head dropped), ``mgm/model/multimodal_projector/builder.py``
(``mlp2x_gelu`` = Linear, GELU, Linear), ``mgm/model/language_model/mgm_llama.py`` (``model_type`` "mgm",
``MGMLlamaForCausalLM`` over ``LlamaForCausalLM``'s own names) and ``mgm/train/train.py`` (the keys it sets on
``model.config`` before saving). The image features an MGM checkpoint computes are MGM's ``encode_images`` and
``unified_resampler`` (``mgm_arch.py``) over ``OpenCLIPVisionTower.backbone`` (``openclip_encoder.py``), with the
low-res image made as ``mgm/train/train.py`` and ``mgm/eval/model_vqa.py`` make it; ``_mgm_image_features`` below
writes that algorithm out step by step, independently of bettersynth's modules.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

from bettersynth.cli.main import main
from bettersynth.vlm import load_vlm
from bettersynth.vlm.aux_tower import AuxTowerSpec, build_aux_tower
from bettersynth.vlm.builder import build_mini_gemini
from bettersynth.vlm.mgm import MiniGeminiConfig, MiniGeminiForConditionalGeneration
from bettersynth.vlm.mgm_interop import MgmInteropError, export_mgm, import_mgm
from bettersynth_demo.models import build_tiny_clip

MGM_CONFIG_KEYS = {
    "mm_vision_tower", "mm_vision_tower_aux", "mm_hidden_size", "mm_hidden_size_aux", "use_mm_proj",
    "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature", "image_size_aux",
    "optimize_vision_tower", "optimize_vision_tower_aux", "image_grid", "image_global", "image_aspect_ratio",
    "image_grid_pinpoints", "tokenizer_padding_side", "tokenizer_model_max_length", "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter", "mm_use_im_start_end", "mm_projector_lr", "mm_use_im_patch_token",
}
# Where each MGM weight lives in bettersynth's Mini-Gemini (the LM's own names under model.language_model).
OURS_FOR_MGM = (
    ("lm_head.", "lm_head."), ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."), ("model.norm.", "model.language_model.norm."),
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.vlm_uni_query_projector.", "model.patch_mining.q."),
    ("model.vlm_uni_aux_projector.", "model.patch_mining.k."), ("model.vlm_uni_val_projector.", "model.patch_mining.v."),
    ("model.vision_tower_aux.vision_stem.", "model.aux_tower.trunk.stem."),
    ("model.vision_tower_aux.vision_stages.", "model.aux_tower.trunk.stages."),
)
MGM_WEIGHT_PREFIXES = tuple(theirs for theirs, _ in OURS_FOR_MGM)
MINING = {f"model.vlm_uni_{n}_projector.{i}.{p}" for n in ("query", "aux", "val") for i in (0, 1)
          for p in ("weight", "bias")}

# convnext_atto (open_clip preset convnext_base with its trunk swapped): 64 px; stages of 40, 80, 160, 320 channels.
# MGM lists a tower's stage widths (OpenCLIPVisionTower.model_channel) and feeds the mining their sum.
STAGE_WIDTHS = (40, 80, 160, 320)
AUX_WIDTH = sum(STAGE_WIDTHS)  # mm_hidden_size_aux: 600 here, 2880 for convnext_large_d_320
PICO_AUX = AuxTowerSpec(
    preset="convnext_base", image_size=64,
    overrides={"embed_dim": 16, "vision_cfg": {"timm_model_name": "convnext_atto"},
               "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}},
)


def ours_name(key: str) -> str:
    theirs, ours = next((t, o) for t, o in OURS_FOR_MGM if key.startswith(t))
    return ours + key[len(theirs):]


def _same_files(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert tensor.dtype == b[key].dtype and torch.equal(tensor, b[key]), key


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, caption_records, chat_records) -> Path:
    texts = [t["value"] for r in caption_records + chat_records for t in r["conversations"]] * 4
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "openai-clip-pico", texts)  # 32 px, patch 8, width 32


@pytest.fixture(scope="module")
def ours(clip_dir, lm_dir, tmp_path_factory) -> Path:
    """A pico bettersynth Mini-Gemini as build_mini_gemini writes it."""
    return build_mini_gemini(clip_dir, lm_dir, PICO_AUX, tmp_path_factory.mktemp("ours") / "mgm")


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory) -> Path:
    return export_mgm(ours, tmp_path_factory.mktemp("exported") / "mgm")


def _variant(ours: Path, folder: Path, **fields) -> Path:
    """``ours`` with other config fields (and freshly initialised weights of the shapes they imply)."""
    shutil.copytree(ours, folder)
    config = MiniGeminiConfig.from_pretrained(ours)
    for key, value in fields.items():
        setattr(config, key, value)
    MiniGeminiForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def legacy(ours, tmp_path_factory) -> Path:
    """A model saved before ``aux_features`` existed: its mining reads the last stage (320 channels), window 2."""
    folder = _variant(ours, tmp_path_factory.mktemp("legacy") / "mgm", aux_features="last_stage", mining_window=2)
    saved = json.loads((folder / "config.json").read_text())
    del saved["aux_features"]
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def test_export_writes_mgms_config_keys_and_weight_names(ours, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "mgm" and config["architectures"] == ["MGMLlamaForCausalLM"]
    assert MGM_CONFIG_KEYS <= config.keys()
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["mm_vision_select_feature"] == "patch"
    assert (config["mm_hidden_size"], config["mm_hidden_size_aux"], config["image_size_aux"]) == (32, AUX_WIDTH, 64)
    assert config["mm_vision_select_layer"] == -2 and config["mm_use_im_patch_token"] is False
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2  # the LM config is the top level
    index = json.loads((exported / "model.safetensors.index.json").read_text())  # MGM's loader reads the index
    (shard,) = set(index["weight_map"].values())  # one shard: MGM reads tower weights from the mining's shards
    weights = load_file(exported / shard)
    assert set(index["weight_map"]) == set(weights)
    assert all(k.startswith(MGM_WEIGHT_PREFIXES) for k in weights), [k for k in weights
                                                                     if not k.startswith(MGM_WEIGHT_PREFIXES)]
    assert all(any(k.startswith(p) for k in weights) for p in MGM_WEIGHT_PREFIXES)
    assert {k for k in weights if "vlm_uni" in k} == MINING
    for name in ("aux", "val"):
        assert weights[f"model.vlm_uni_{name}_projector.0.weight"].shape == (AUX_WIDTH,)  # LayerNorm(mm_hidden_size_aux)
        assert weights[f"model.vlm_uni_{name}_projector.1.weight"].shape == (32, AUX_WIDTH)  # Linear(-> mm_hidden_size)
    assert weights["model.mm_projector.0.weight"].shape == (64, 32) and weights["model.mm_projector.2.weight"].shape == (64, 64)
    assert "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight" in weights
    assert "model.vision_tower_aux.vision_stem.0.weight" in weights
    assert AutoTokenizer.from_pretrained(exported).convert_tokens_to_ids("<image>") == load_vlm(
        ours).model.config.image_token_index  # MGM reads its tokenizer from the same folder


def test_round_trip_is_exact_key_for_key(ours, exported, tmp_path):
    back = import_mgm(exported, tmp_path / "back")
    assert type(load_vlm(back).model) is MiniGeminiForConditionalGeneration
    original, again = load_file(ours / "model.safetensors"), load_file(back / "model.safetensors")
    _same_files(original, again)
    # The only weights MGM's layout does not carry: the ConvNeXt head, never read (and at its fresh init here).
    head = {k for k in original if k.startswith("model.aux_tower.trunk.head.")}
    assert head and all(torch.equal(original[k], torch.ones_like(original[k]) if k.endswith("weight")
                                    else torch.zeros_like(original[k])) for k in head)
    a, b = load_vlm(ours).model.config, load_vlm(back).model.config
    for field in ("mining_window", "aux_tower", "image_token_index", "image_seq_length", "vision_feature_layer",
                  "vision_feature_select_strategy", "tie_word_embeddings"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.vision_config.to_dict() == b.vision_config.to_dict()
    assert a.text_config.hidden_size == b.text_config.hidden_size and a.text_config.vocab_size == b.text_config.vocab_size
    # ... and back again to MGM: the same file, tensor for tensor.
    twice = export_mgm(back, tmp_path / "twice")
    _same_files(load_file(exported / "model-00001-of-00001.safetensors"),
                load_file(twice / "model-00001-of-00001.safetensors"))


def test_export_refuses_a_model_mgm_would_compute_other_features_for(ours, legacy, tmp_path):
    assert load_vlm(legacy).model.config.aux_features == "last_stage"  # still loads, as it was trained
    with pytest.raises(MgmInteropError, match="not exportable to MGM.*'last_stage' \\(320 channels\\).*all ConvNeXt stages"):
        export_mgm(legacy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    narrow = _variant(ours, tmp_path / "window", mining_window=2)  # MGM's map, but resized to 2x2 cells per token
    with pytest.raises(MgmInteropError, match="not exportable to MGM: mining_window 2, but MGM's code mines the 4x4"):
        export_mgm(narrow, tmp_path / "out")


# -- a checkpoint written by hand in MGM's layout ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mgm_parts(clip_dir, lm_dir, tmp_path_factory):
    """What an MGM run leaves: its config, its weights by MGM's names, its tokenizer, the tower folders it names."""
    zoo = tmp_path_factory.mktemp("zoo")
    aux_dir = zoo / "openclip-convnext-pico"
    aux_dir.mkdir()
    base = open_clip.get_model_config("convnext_base")
    model_cfg = {**base, "embed_dim": 16, "vision_cfg": {**base["vision_cfg"], "timm_model_name": "convnext_atto"},
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (aux_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.manual_seed(3)
    trunk = build_aux_tower(AuxTowerSpec(preset="local-dir:x", image_size=64, model_cfg=model_cfg)).trunk
    weights = load_file(lm_dir / "model.safetensors")  # MGMLlamaForCausalLM keeps LlamaForCausalLM's names
    weights |= {f"model.vision_tower.vision_tower.{k}": v for k, v in load_file(clip_dir / "model.safetensors").items()
                if k.startswith("vision_model.")}
    assert tuple(info["num_chs"] for info in trunk.feature_info) == STAGE_WIDTHS
    with torch.no_grad():  # trained-like layer scales (timm starts them at 1e-6): every block then shapes the map
        for name, param in trunk.named_parameters():
            if name.endswith(".gamma"):
                param.normal_(0.0, 0.5)
    weights |= {f"model.vision_tower_aux.vision_{k}": v for k, v in trunk.state_dict().items()
                if k.startswith(("stem.", "stages."))}
    clip, llm, aux = 32, 64, AUX_WIDTH  # mm_hidden_size, hidden_size, mm_hidden_size_aux (every stage concatenated)
    weights |= {"model.mm_projector.0.weight": torch.randn(llm, clip), "model.mm_projector.0.bias": torch.randn(llm),
                "model.mm_projector.2.weight": torch.randn(llm, llm), "model.mm_projector.2.bias": torch.randn(llm)}
    for name, width in (("query", clip), ("aux", aux), ("val", aux)):
        weights |= {f"model.vlm_uni_{name}_projector.0.weight": 1 + 0.1 * torch.randn(width),
                    f"model.vlm_uni_{name}_projector.0.bias": torch.randn(width),
                    f"model.vlm_uni_{name}_projector.1.weight": torch.randn(clip, width) / width**0.5,
                    f"model.vlm_uni_{name}_projector.1.bias": torch.randn(clip)}
    config = json.loads((lm_dir / "config.json").read_text()) | {
        "model_type": "mgm", "architectures": ["MGMLlamaForCausalLM"], "mm_vision_tower": str(clip_dir),
        "mm_vision_tower_aux": str(aux_dir), "mm_hidden_size": clip, "mm_hidden_size_aux": aux, "use_mm_proj": True,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_size_aux": 64, "optimize_vision_tower": False, "optimize_vision_tower_aux": False, "image_grid": 1,
        "image_global": False, "image_aspect_ratio": "pad", "image_grid_pinpoints": None,
        "tokenizer_padding_side": "right", "tokenizer_model_max_length": 2048, "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False, "mm_use_im_start_end": False, "mm_projector_lr": None,
        "mm_use_im_patch_token": False,
    }
    return config, weights, _tokenizer_without_image_token(zoo / "tokenizer", weights["model.embed_tokens.weight"].shape[0])


def _tokenizer_without_image_token(folder: Path, rows: int) -> Path:
    """Like MGM's (Gemma's, Vicuna's): no ``<image>`` entry (MGM splices a placeholder id), one id per embedding row."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "a", "red", "square"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words + [f"w{i}" for i in range(rows - len(words))])},
                                         unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(folder)
    return folder


def write_mgm(folder: Path, config: dict, weights: dict[str, torch.Tensor], tokenizer_dir: Path) -> Path:
    """An MGM checkpoint as HF's Trainer saves it: config, two safetensors shards with their index, tokenizer."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": [k for k in names if k.startswith(("model.layers.", "model.embed"))]}
    shards["model-00002-of-00002.safetensors"] = [k for k in names if k not in shards["model-00001-of-00002.safetensors"]]
    for shard, keys in shards.items():
        save_file({k: weights[k].contiguous() for k in keys}, folder / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def _ln_linear(weights: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    """An MGM ``vlm_uni_*_projector``: LayerNorm then Linear, applied from its stored weights."""
    w = {k.removeprefix(f"model.{name}."): v for k, v in weights.items() if k.startswith(f"model.{name}.")}
    x = F.layer_norm(x, (x.shape[-1],), w["0.weight"], w["0.bias"])
    return F.linear(x, w["1.weight"], w["1.bias"])


def _mgm_image_features(weights: dict[str, torch.Tensor], clip_dir: Path, pixels: torch.Tensor) -> torch.Tensor:
    """What MGM's code computes for one aux-size image (1, 3, H, W), token by token, from the checkpoint's weights."""
    prefix = "model.vision_tower.vision_tower.vision_model."  # the CLIP tower (transformers 5 drops .vision_model)
    clip = CLIPVisionModel(CLIPVisionConfig.from_pretrained(clip_dir)).eval()
    clip.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)})
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=0).eval()  # its stem and stages
    prefix = "model.vision_tower_aux.vision_"
    missing = convnext.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)},
                                       strict=False).missing_keys
    assert all(k.startswith("head.") for k in missing), missing  # MGM drops the head
    with torch.no_grad():
        # The low-res image: the aux image resized to the CLIP size, bilinear, align_corners=False (no antialias).
        low = F.interpolate(pixels, size=(clip.config.image_size,) * 2, mode="bilinear", align_corners=False)
        tokens = clip(low, output_hidden_states=True).hidden_states[-2][0, 1:]  # select layer -2, "patch": no CLS
        # The aux map: each stage's output, stages 1-3 upsampled bilinearly to stage 0's grid, concatenated in order.
        x, stages = convnext.stem(pixels), []
        for stage in convnext.stages:
            x = stage(x)
            stages.append(x if not stages else F.interpolate(x, size=stages[0].shape[-2:], mode="bilinear",
                                                               align_corners=False))
        aux = torch.cat(stages, dim=1)[0]  # (C, H0, W0)
        side = int(tokens.shape[0] ** 0.5)
        k = aux.shape[-1] // side  # MGM's patch_size: aux cells per token side
        out = []
        for t, token in enumerate(tokens):  # token t sits at (row, col) = divmod(t, side) of the CLIP grid
            r, c = divmod(t, side)
            cells = aux[:, r * k:(r + 1) * k, c * k:(c + 1) * k].reshape(aux.shape[0], -1).T  # (k*k, C), row-major
            q = _ln_linear(weights, "vlm_uni_query_projector", token)
            keys = _ln_linear(weights, "vlm_uni_aux_projector", cells)
            values = _ln_linear(weights, "vlm_uni_val_projector", cells)
            attention = torch.softmax(keys @ q / keys.shape[-1] ** 0.5, dim=0)  # scaled by 1/sqrt(projected width)
            out.append(token + attention @ values)  # the mined detail is added to the CLIP token
        hidden = F.gelu(F.linear(torch.stack(out), weights["model.mm_projector.0.weight"],
                                 weights["model.mm_projector.0.bias"]))  # mlp2x_gelu
        return F.linear(hidden, weights["model.mm_projector.2.weight"], weights["model.mm_projector.2.bias"])


def test_a_checkpoint_in_mgms_layout_imports_loads_and_runs(mgm_parts, clip_dir, tmp_path):
    config, weights, tokenizer_dir = mgm_parts
    src = write_mgm(tmp_path / "MGM-pico", config, weights, tokenizer_dir)
    vlm = load_vlm(import_mgm(src, tmp_path / "ours"), dtype=torch.float32)
    model = vlm.model
    assert type(model) is MiniGeminiForConditionalGeneration
    assert model.config.mining_window == 4  # MGM's: the 16x16 first-stage grid over the 4x4 CLIP grid
    state = model.state_dict()
    for key, tensor in weights.items():
        ours = ours_name(key)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):  # one row more: the <image> token, the mean row
            assert torch.equal(state[ours][:-1], tensor) and torch.allclose(state[ours][-1], tensor.mean(0)), key
        else:
            assert torch.equal(state[ours], tensor), key
    # MGM's placeholder id has no vocabulary entry; ours is a token the processor expands to the 4x4 grid.
    noise = torch.randint(0, 256, (40, 40, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = Image.fromarray(noise.numpy())  # detail at every scale: each resize and window shows in the features
    inputs = vlm.processor(images=image, text="<image> a red square", return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (64, 64)
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 16
    with torch.no_grad():
        logits = model(**inputs).logits
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
    assert logits.shape[-1] == model.config.text_config.vocab_size and torch.isfinite(logits).all()
    # The image features are MGM's, computed from the checkpoint's own weights.
    want = _mgm_image_features(weights, clip_dir, inputs["pixel_values"])
    assert features.shape == want.shape == (16, 64)
    torch.testing.assert_close(features, want, rtol=1e-4, atol=1e-5)
    # ... and they hold the aux detail: another aux map changes them.
    with torch.no_grad():
        model.model.aux_tower.trunk.stages[0].blocks[0].mlp.fc2.weight.mul_(3.0)
        other = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
    assert not torch.allclose(other, want, atol=1e-3)


def test_an_exported_model_computes_in_mgm_what_it_computes_here(ours, exported, clip_dir):
    weights = load_file(exported / "model-00001-of-00001.safetensors")
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 4 - 2
    with torch.no_grad():
        here = load_vlm(ours, dtype=torch.float32).model.model.get_image_features(pixel_values=pixels).pooler_output[0]
    torch.testing.assert_close(here, _mgm_image_features(weights, clip_dir, pixels), rtol=1e-4, atol=1e-5)


def test_an_aux_width_that_is_not_the_stages_sum_is_refused_by_name(mgm_parts, tmp_path):
    config, weights, tokenizer_dir = mgm_parts
    last = STAGE_WIDTHS[-1]  # a checkpoint whose mining saw the last stage only cannot come from this aux tower
    weights = weights | {f"model.vlm_uni_{n}_projector.{p}": t for n in ("aux", "val") for p, t in (
        ("0.weight", torch.ones(last)), ("0.bias", torch.zeros(last)), ("1.weight", torch.zeros(32, last)))}
    src = write_mgm(tmp_path / "MGM-narrow", config | {"mm_hidden_size_aux": last}, weights, tokenizer_dir)
    with pytest.raises(MgmInteropError, match="mm_hidden_size_aux=320, but the aux tower's 4 ConvNeXt stages sum to 600"):
        import_mgm(src, tmp_path / "ours")


def test_an_aux_size_whose_grid_does_not_divide_is_refused(mgm_parts, tmp_path):
    config, weights, tokenizer_dir = mgm_parts
    src = write_mgm(tmp_path / "MGM-40", config | {"image_size_aux": 40}, weights, tokenizer_dir)  # 10x10 over 4x4
    with pytest.raises(MgmInteropError, match="image_size_aux 40: the aux feature map's 10x10 grid is not a whole "
                                              "multiple of the CLIP token grid 4x4"):
        import_mgm(src, tmp_path / "ours")


@pytest.mark.parametrize("change, message", [
    (lambda w: w | {"model.vision_resampler.weight": torch.zeros(2)}, "'model.vision_resampler.weight' has no counterpart"),
    (lambda w: {k: v for k, v in w.items() if k != "model.mm_projector.2.bias"}, "no MGM weight 'model.mm_projector.2.bias'"),
])
def test_a_weight_in_one_layout_only_is_an_error_naming_it(mgm_parts, tmp_path, change, message):
    config, weights, tokenizer_dir = mgm_parts
    src = write_mgm(tmp_path / "MGM-odd", config, change(weights), tokenizer_dir)
    with pytest.raises(MgmInteropError, match=message):
        import_mgm(src, tmp_path / "ours")


def test_folders_that_are_not_the_layout_asked_for(ours, mgm_parts, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MgmInteropError, match="empty/config.json: not readable"):
        import_mgm(tmp_path / "empty", tmp_path / "a")
    with pytest.raises(MgmInteropError, match="model_type 'bettersynth_mgm' is not a Mini-Gemini checkpoint"):
        import_mgm(ours, tmp_path / "b")
    config, weights, tokenizer_dir = mgm_parts
    plain = {k: v for k, v in config.items() if k != "mm_vision_tower_aux"}  # MGM's LLaVA-only run
    src = write_mgm(tmp_path / "no-aux", plain, weights, tokenizer_dir)
    with pytest.raises(MgmInteropError, match="no 'mm_vision_tower_aux'"):
        import_mgm(src, tmp_path / "c")
    with pytest.raises(MgmInteropError, match="mm_projector_type='linear' is not supported"):
        import_mgm(write_mgm(tmp_path / "linear", config | {"mm_projector_type": "linear"}, weights, tokenizer_dir),
                   tmp_path / "d")
    without = {k: v for k, v in config.items() if k != "mm_projector_type"}  # MGM's default then: 'linear'
    with pytest.raises(MgmInteropError, match="mm_projector_type='linear' is not supported"):
        import_mgm(write_mgm(tmp_path / "default", without, weights, tokenizer_dir), tmp_path / "d2")
    with pytest.raises(MgmInteropError, match="is not bettersynth's Mini-Gemini"):
        export_mgm(src, tmp_path / "e")
    with pytest.raises(MgmInteropError, match="empty/config.json"):
        export_mgm(tmp_path / "empty", tmp_path / "f")


def test_cli_verbs(ours, legacy, tmp_path, capsys):
    assert main(["vlm", "export-mgm", str(ours), str(tmp_path / "mgm"),
                 "--vision-tower", "model_zoo/OpenAI/clip-vit-large-patch14-336"]) == 0
    assert json.loads((tmp_path / "mgm" / "config.json").read_text())["mm_vision_tower"] == (
        "model_zoo/OpenAI/clip-vit-large-patch14-336")
    assert main(["vlm", "import-mgm", str(tmp_path / "mgm"), str(tmp_path / "back")]) == 0
    _same_files(load_file(ours / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors"))
    assert main(["vlm", "export-mgm", str(legacy), str(tmp_path / "strict")]) == 1
    assert "not exportable to MGM" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["vlm", "import-mgm", str(tmp_path / "plain"), str(tmp_path / "x")]) == 1
    assert "plain/config.json: not readable" in capsys.readouterr().err
