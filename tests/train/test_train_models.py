"""LLaVA and Mini-Gemini built from separate local parts: weights carried over, shapes, gradients, freezing."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from bettersynth.train import defaults_for, freeze_for_stage, train_stage
from bettersynth.vlm import load_vlm, vlm_class
from bettersynth.vlm.aux_tower import AuxTowerSpec, build_aux_tower
from bettersynth.vlm.builder import build_llava, build_mini_gemini
from bettersynth.vlm.mgm import MiniGeminiConfig, MiniGeminiForConditionalGeneration
from bettersynth.vlm.mining import PatchInfoMining, window_for
from bettersynth_demo.models import build_tiny_clip
from bettersynth_demo.tokenizers import train_lm_tokenizer

# convnext_atto (open_clip preset convnext_base with its trunk swapped): 3.4M params; at 64 px its stages give
# 16x16 (40 ch), 8x8 (80), 4x4 (160), 2x2 (320): MGM's map is all four at 16x16, 600 channels. With the pico CLIP
# (32 px, patch 8: 4x4 tokens) each token mines a 4x4 window.
PICO_AUX = AuxTowerSpec(
    preset="convnext_base", image_size=64,
    overrides={"embed_dim": 16, "vision_cfg": {"timm_model_name": "convnext_atto"},
               "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}},
)


def _naive_mining(m: PatchInfoMining, low: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """Token by token, window by window, straight from the definition: token (r, c) reads cells [r*k:(r+1)*k, c*k:...]."""
    b, n, d = low.shape
    side, k = int(n**0.5), m.window
    out = low.clone()
    for i in range(b):
        for t in range(n):
            r, c = divmod(t, side)
            cells = aux[i, :, r * k:(r + 1) * k, c * k:(c + 1) * k].reshape(aux.shape[1], -1).T  # (k*k, C)
            q, keys, values = m.q(low[i, t]), m.k(cells), m.v(cells)
            weights = torch.softmax(keys @ q / d**0.5, dim=0)
            out[i, t] = low[i, t] + weights @ values
    return out


def test_mining_matches_the_definition_and_keeps_shape():
    torch.manual_seed(0)
    mining = PatchInfoMining(low_dim=8, aux_dim=6, window=2)
    low, aux = torch.randn(2, 9, 8), torch.randn(2, 6, 6, 6)  # 3x3 tokens, 6x6 map: 2x2 windows
    out = mining(low, aux)
    assert out.shape == low.shape
    torch.testing.assert_close(out, _naive_mining(mining, low, aux), rtol=1e-5, atol=1e-5)
    # A map of another size is resized to the window grid first.
    assert mining(low, torch.randn(2, 6, 4, 4)).shape == low.shape
    with pytest.raises(ValueError, match="square grid"):
        mining(torch.randn(1, 8, 8), aux[:1])


def test_mining_is_mgms_arithmetic_on_mgms_window():
    """The pico model's case: a 16x16 map over 4x4 tokens, window 4, no resizing."""
    torch.manual_seed(0)
    mining = PatchInfoMining(low_dim=8, aux_dim=600, window=window_for(16, 4))
    low, aux = torch.randn(2, 16, 8), torch.randn(2, 600, 16, 16)
    torch.testing.assert_close(mining(low, aux), _naive_mining(mining, low, aux), rtol=1e-5, atol=1e-5)


def test_mining_window_is_the_grid_ratio_and_must_divide():
    assert window_for(192, 24) == 8 and window_for(16, 4) == 4  # MGM's 768 px / 4 over 336 / 14; the pico's
    for aux_grid, tokens in ((10, 4), (2, 4), (16, 0)):
        with pytest.raises(ValueError, match="not a whole multiple of the CLIP token grid"):
            window_for(aux_grid, tokens)


def test_aux_features_are_every_stage_upsampled_to_stage_zero():
    tower = build_aux_tower(PICO_AUX).eval()
    assert tower.channels == 40 + 80 + 160 + 320 and tower.grid(64) == 16
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = tower(pixels)
        x, maps = tower.trunk.stem(pixels), []
        for stage in tower.trunk.stages:
            x = stage(x)
            maps.append(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    assert got.shape == (2, 600, 16, 16)
    torch.testing.assert_close(got, torch.cat(maps, dim=1))
    assert torch.equal(got[:, :40], maps[0])  # stage 0 as it is, first
    legacy = build_aux_tower(PICO_AUX, "last_stage")
    assert legacy.channels == 320 and legacy.grid(64) == 2


def test_mining_detail_reaches_only_its_own_token():
    torch.manual_seed(0)
    mining = PatchInfoMining(low_dim=8, aux_dim=6, window=2)
    low, aux = torch.randn(1, 4, 8), torch.randn(1, 6, 4, 4)
    changed = aux.clone()
    changed[0, :, 2:, 2:] += 5.0  # the bottom-right window only
    delta = (mining(low, changed) - mining(low, aux)).abs().sum(-1)[0]
    assert delta[3] > 0 and torch.all(delta[:3] == 0)


def test_mining_gradients_reach_queries_keys_and_values():
    mining = PatchInfoMining(low_dim=8, aux_dim=6, window=2)
    low = torch.randn(2, 4, 8, requires_grad=True)
    mining(low, torch.randn(2, 6, 4, 4)).square().sum().backward()
    for name, p in mining.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert low.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def parts(tmp_path_factory, caption_records, chat_records) -> tuple[Path, Path]:
    """A tiny HF CLIP and a tiny HF causal LM, saved separately as users have them."""
    root = tmp_path_factory.mktemp("parts")
    texts = [t["value"] for r in caption_records + chat_records for t in r["conversations"]] * 4
    clip_dir = build_tiny_clip(root / "clip", texts)
    torch.manual_seed(1)
    tokenizer = train_lm_tokenizer(texts, vocab_size=800)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    ))
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return clip_dir, root / "lm"


@pytest.fixture(scope="module")
def built_llava(parts, tmp_path_factory) -> Path:
    return build_llava(*parts, tmp_path_factory.mktemp("built") / "llava")


def test_llava_builder_carries_both_parts_and_a_fresh_projector(built_llava, parts):
    clip_dir, lm_dir = parts
    model = load_vlm(built_llava).model
    vision, lm = CLIPVisionModel.from_pretrained(clip_dir), LlamaForCausalLM.from_pretrained(lm_dir)
    for got, want in ((model.model.vision_tower, vision), (model.model.language_model, lm.model),
                      (model.lm_head, lm.lm_head)):
        expected = want.state_dict()
        assert got.state_dict().keys() == expected.keys()
        assert all(torch.equal(t, expected[n]) for n, t in got.state_dict().items())
    projector = {k: tuple(v.shape) for k, v in model.model.multi_modal_projector.state_dict().items()}
    assert projector == {  # mlp2x_gelu: vision 32 -> text 64 -> 64
        "linear_1.weight": (64, 32), "linear_1.bias": (64,), "linear_2.weight": (64, 64), "linear_2.bias": (64,),
    }
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"


def test_built_llava_trains_stage_one(built_llava, caption_records, image_root, tmp_path):
    config = defaults_for("align", global_batch_size=4, per_device_batch_size=4, max_steps=1, max_length=64)
    result = train_stage(built_llava, caption_records, image_root, config, tmp_path)
    assert result.trainable_params == 64 * 32 + 64 + 64 * 64 + 64
    assert torch.isfinite(torch.tensor(result.losses)).all()


@pytest.fixture(scope="module")
def built_mgm(parts, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mgm")
    aux_model = build_aux_tower(PICO_AUX)  # stands in for a downloaded open_clip ConvNeXt checkpoint
    torch.save({"state_dict": {f"visual.trunk.{k}": v for k, v in aux_model.trunk.state_dict().items()}},
               root / "aux.pt")
    return build_mini_gemini(*parts, PICO_AUX.model_copy(update={"checkpoint": str(root / "aux.pt")}),
                             root / "mgm"), aux_model


def test_mini_gemini_saves_loads_and_keeps_the_aux_weights(built_mgm):
    model_dir, aux_model = built_mgm
    assert vlm_class(model_dir) is MiniGeminiForConditionalGeneration
    model = load_vlm(model_dir).model
    for name, tensor in aux_model.state_dict().items():
        assert torch.equal(model.model.aux_tower.state_dict()[name], tensor), name
    # MGM's reading, the window derived from the grids (16x16 stage-0 cells over 4x4 tokens), both saved.
    assert (model.config.aux_features, model.config.mining_window, model.model.patch_mining.window) == ("mgm", 4, 4)
    assert model.model.patch_mining.k[1].weight.shape == (32, 600)  # all four stages' channels -> CLIP width
    assert model.model.aux_tower(torch.randn(1, 3, 64, 64)).shape == (1, 600, 16, 16)


def test_mini_gemini_refuses_grids_that_do_not_divide(parts, tmp_path):
    """Patch 14 with the aux at the CLIP size (as 336 px / 14 with a 336 px aux): 14x14 stage-0 cells, 4x4 tokens."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    clip = tmp_path / "clip-56"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=56, patch_size=14)).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(clip)
    with pytest.raises(ValueError, match="14x14 grid is not a whole multiple of the CLIP token grid 4x4"):
        build_mini_gemini(clip, parts[1], PICO_AUX.model_copy(update={"image_size": 56}), tmp_path / "mgm")
    assert not (tmp_path / "mgm").exists()


def test_a_config_from_before_aux_features_keeps_its_last_stage_reading(tmp_path):
    """Saved models whose config lacks ``aux_features`` were trained on the last stage: they load and run as such."""
    from transformers import CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    old = MiniGeminiForConditionalGeneration(MiniGeminiConfig(
        vision_config=vision, text_config=text, aux_tower=PICO_AUX.model_dump(), aux_features="last_stage",
        mining_window=2, image_token_index=63)).eval()
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["aux_features"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    again = MiniGeminiForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert (again.config.aux_features, again.config.mining_window, again.model.aux_tower.channels) == ("last_stage", 2, 320)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = old.model.get_image_features(pixel_values=pixels).pooler_output[0]
        assert torch.equal(again.model.get_image_features(pixel_values=pixels).pooler_output[0], want)
    assert MiniGeminiConfig().aux_features == "mgm"  # a new config reads as MGM does


def test_mini_gemini_freezing_and_gradient_flow_in_stage_one(built_mgm):
    model = load_vlm(built_mgm[0]).model
    counts = freeze_for_stage(model, "align")
    mining = sum(p.numel() for p in model.model.patch_mining.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert counts.trainable == mining + projector
    image_id = model.config.image_token_index
    input_ids = torch.cat([torch.full((2, 16), image_id), torch.randint(5, 50, (2, 6))], dim=1)
    pixels = torch.randn(2, 3, 64, 64)  # the aux size; the model downsamples to the CLIP tower's 32
    features = model.model.get_image_features(pixel_values=pixels).pooler_output
    assert len(features) == 2 and features[0].shape == (16, 64)  # 4x4 low-res tokens, LLM width
    labels = input_ids.clone()
    labels[:, :16] = -100
    model(input_ids=input_ids, pixel_values=pixels, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        trains = name.startswith(("model.patch_mining", "model.multi_modal_projector"))
        assert (p.grad is not None) == trains, name
        if trains:
            assert p.grad.abs().sum() > 0, name
    counts = freeze_for_stage(model, "finetune")
    llm = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    assert counts.trainable == mining + projector + llm


def test_mini_gemini_trains_stage_one_with_its_processor(built_mgm, caption_records, image_root, tmp_path):
    config = defaults_for("align", global_batch_size=4, per_device_batch_size=2, max_steps=2, max_length=64,
                          learning_rate=1e-2)
    result = train_stage(built_mgm[0], caption_records, image_root, config, tmp_path)
    before, after = load_file(built_mgm[0] / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == ("patch_mining" in name or "multi_modal_projector" in name), name
    assert any("patch_mining" in name for name in before) and result.steps == 2


@pytest.fixture(params=["llava", "mgm"])
def any_vlm(request, built_llava, built_mgm) -> Path:
    """The same consumers run on both architectures: one loader serves them all."""
    return built_llava if request.param == "llava" else built_mgm[0]


def test_one_loader_gives_the_class_every_weight_and_the_processor(any_vlm, tmp_path):
    vlm = load_vlm(any_vlm, dtype=torch.float32)
    assert type(vlm.model) is vlm_class(any_vlm)
    vlm.model.save_pretrained(tmp_path)  # nothing dropped, nothing freshly initialised: the same tensors come back
    saved, again = load_file(any_vlm / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    size = vlm.model.config.aux_tower["image_size"] if "aux_tower" in vlm.model.config else 32
    assert vlm.processor.image_processor.crop_size["height"] == size  # the processor saved beside the weights


def test_generation_caption_loss_and_perplexity_op_load_either_architecture(any_vlm, image_root, caption_records):
    from bettersynth.core.sample import Sample
    from bettersynth.engine import Engine, EngineSettings
    from bettersynth.engine.perplexity import CaptionPerplexityTask
    from bettersynth.eval import generate_answers
    from bettersynth.eval.benchmark import EvalItem
    from bettersynth.eval.caption_loss import heldout_caption_loss

    items = [EvalItem(f"q{i}", image_root / "imgs" / f"{i}.png", "What colour is it?") for i in range(3)]
    answers = generate_answers(any_vlm, items, batch_size=2, max_new_tokens=3, device="cpu")
    assert list(answers) == ["q0", "q1", "q2"]
    loss = heldout_caption_loss(any_vlm, caption_records[:4], image_root, batch_size=2, device="cpu")
    assert loss.samples == 4 and loss.tokens > 0 and math.isfinite(loss.loss)
    samples = [Sample(r["id"], f"<__dj__image> {r['conversations'][1]['value']}", images=[r["image"]])
               for r in caption_records[:4]]
    results = Engine(EngineSettings(batch_size=2, num_workers=0), dataset_root=image_root).run(
        CaptionPerplexityTask(model_path=any_vlm), samples)
    assert all(isinstance(result, dict) for result in results), results
    perplexities = [value for result in results for value in result.values()]
    assert len(perplexities) == 4 and all(math.isfinite(p) and p > 1 for p in perplexities)
    # The op's number is the stage-1 training loss of that sample, as caption loss measures it.
    by_id = {r["id"]: r["loss"] for r in loss.records}
    assert perplexities[0] == pytest.approx(math.exp(by_id[samples[0].id]), rel=1e-4)


@pytest.mark.parametrize("method", ["uniform", "maximum", "greedy"])
def test_soups_of_mini_gemini_finetunes_load_and_score(method, built_mgm, caption_records, image_root, tmp_path):
    """Two Mini-Gemini ingredients (one perturbed): each soup method writes a Mini-Gemini that the held-out
    scorer loads through the one loader; uniform is the exact mean of every weight, aux tower and mining too."""
    from bettersynth.eval.caption_loss import heldout_caption_loss
    from bettersynth.soup import make_soup

    base = built_mgm[0]
    other = load_vlm(base, dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    other.model.save_pretrained(tmp_path / "other")
    other.processor.save_pretrained(tmp_path / "other")

    def held_out(path):
        return -heldout_caption_loss(path, caption_records[:4], image_root, batch_size=4, device="cpu").loss

    result = make_soup(method, [base, tmp_path / "other"], tmp_path / "soup", evaluate=held_out)
    soup = load_vlm(result.out_dir, dtype=torch.float32)
    assert isinstance(soup.model, MiniGeminiForConditionalGeneration)
    assert math.isfinite(held_out(result.out_dir))
    if method == "uniform":
        one, two = load_file(base / "model.safetensors"), load_file(tmp_path / "other" / "model.safetensors")
        mixed = load_file(result.out_dir / "model.safetensors")
        assert any(k.startswith("model.aux_tower.") for k in mixed)
        for name, tensor in mixed.items():
            torch.testing.assert_close(tensor, (one[name] + two[name]) / 2, rtol=1e-5, atol=1e-6)
