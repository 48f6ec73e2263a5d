"""Convert between bettersynth's Mini-Gemini folders and the layout the original Mini-Gemini code saves.

Why: the Better Synth kit trains with dvlab-research/MGM, whose checkpoints
are one causal LM (``model_type`` ``mgm``/``mgm_gemma``/...) carrying the towers,
projector and mining modules under its own weight names and ``mm_*`` config
keys. Converting key for key lets a team read such a run in our pipeline and
hand one of ours back, without retraining or a lossy approximation.

Rules the MGM layout forces (each refused by name when it does not hold):

* MGM names its towers by path (``mm_vision_tower``, ``mm_vision_tower_aux``)
  instead of storing their configs. On import the CLIP config and image processor
  come from ``vision_tower`` (an HF CLIP folder) when given, else from the
  ``bettersynth_mgm`` key our export writes, else from the folder
  ``mm_vision_tower`` names (taken as given, then relative to the checkpoint).
  The aux ConvNeXt comes the same way from an open_clip folder
  (``open_clip_config.json``). Weights always come from the checkpoint itself.
* MGM marks images with a placeholder id (no vocabulary entry); ours needs an
  ``<image>`` token, so import adds one (its embedding row is the mean row)
  when the tokenizer lacks it.
* MGM's mining reads *all* ConvNeXt stages, upsampled to the first stage's grid
  and concatenated (``mm_hidden_size_aux`` = their summed channels), each CLIP
  token its window of stage-0 cells; ours reads alike (``aux_features="mgm"``),
  so the ``vlm_uni_*_projector`` weights carry over as they are. The window is
  not stored by MGM: it follows from the grids (stage-0 grid / CLIP token grid),
  on import as on export. A model of ours built before that reading
  (``aux_features="last_stage"``) is refused at export: MGM's code would compute
  other features with its weights.
* Export writes one shard plus ``model.safetensors.index.json``: MGM's loader
  finds its mining and tower weights through that index and reads them only
  from the shards holding the mining weights.

Example::

    import_mgm("runs/MGM-2B", "models/mgm-2b", vision_tower="model_zoo/OpenAI/clip-vit-large-patch14-336")
    load_vlm("models/mgm-2b")
    export_mgm("models/mgm-2b", "runs/MGM-2B-back", vision_tower="model_zoo/OpenAI/clip-vit-large-patch14-336")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# (bettersynth state-dict prefix, MGM state-dict prefix); the first row whose prefix matches wins, both ways.
# MGM names: mgm_arch.py (mm_projector, vlm_uni_*_projector, vision_tower, vision_tower_aux),
# clip_encoder.py (CLIPVisionModel as .vision_tower), openclip_encoder.py (.vision_stem, .vision_stages of the
# timm ConvNeXt trunk), multimodal_projector/builder.py (mlp2x_gelu: Linear, GELU, Linear -> .0 and .2).
WEIGHT_MAP: tuple[tuple[str, str], ...] = (
    ("lm_head.", "lm_head."),
    ("model.language_model.embed_tokens.", "model.embed_tokens."),
    ("model.language_model.layers.", "model.layers."),
    ("model.language_model.norm.", "model.norm."),
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.patch_mining.q.", "model.vlm_uni_query_projector."),
    ("model.patch_mining.k.", "model.vlm_uni_aux_projector."),
    ("model.patch_mining.v.", "model.vlm_uni_val_projector."),
    ("model.aux_tower.trunk.stem.", "model.vision_tower_aux.vision_stem."),
    ("model.aux_tower.trunk.stages.", "model.vision_tower_aux.vision_stages."),
)
# Ours only and never read by the forward pass (ConvNextFeatures stops before the head; MGM deletes the head):
# not exported, and re-created at fresh init on import.
UNREAD_OURS: tuple[str, ...] = ("model.aux_tower.trunk.head.",)
# Buffers older transformers saved beside the weights; they are recomputed, so import skips them.
DERIVED_THEIRS: tuple[str, ...] = (".position_ids", ".rotary_emb.inv_freq")

# HF LM model_type -> (MGM model_type, MGM class, HF class): mgm/model/language_model/mgm_*.py.
LM_TYPES: dict[str, tuple[str, str, str]] = {
    "llama": ("mgm", "MGMLlamaForCausalLM", "LlamaForCausalLM"),
    "gemma": ("mgm_gemma", "MGMGemmaForCausalLM", "GemmaForCausalLM"),
    "mistral": ("mgm_mistral", "MGMMistralForCausalLM", "MistralForCausalLM"),
    "mixtral": ("mgm_mixtral", "MGMMixtralForCausalLM", "MixtralForCausalLM"),
}
MGM_TYPES = {mgm: hf for hf, (mgm, _, _) in LM_TYPES.items()}

# The keys MGM adds to the LM config: mgm_arch.py (initialize_vision_modules, initialize_uni_modules), train.py.
MGM_CONFIG_KEYS: tuple[str, ...] = (
    "mm_vision_tower", "mm_vision_tower_aux", "mm_hidden_size", "mm_hidden_size_aux", "use_mm_proj",
    "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature",
    "image_size_aux", "optimize_vision_tower", "optimize_vision_tower_aux",
    "image_grid", "image_global", "image_aspect_ratio", "image_grid_pinpoints", "tokenizer_padding_side",
    "tokenizer_model_max_length", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "mm_use_im_start_end",
    "mm_projector_lr", "mm_use_im_patch_token",
)
EXTRA_KEY = "bettersynth_mgm"  # in an exported MGM config: what MGM's layout cannot carry (MGM's code ignores it)
STASH = "mgm_extra"  # in an imported config: the MGM keys as read, written back on export


class MgmInteropError(ValueError):
    """A folder that is not the layout asked for, or a model the other layout cannot express."""


def rename(key: str, to_mgm: bool) -> str | None:
    """The other layout's name for ``key`` (ours when ``to_mgm``), or None when no row maps it."""
    for ours, theirs in WEIGHT_MAP:
        src, dst = (ours, theirs) if to_mgm else (theirs, ours)
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def read_mgm_config(folder: Path | str) -> dict[str, Any]:
    """``config.json`` of an MGM checkpoint, refused by file and reason when it is not one."""
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MgmInteropError(f"{path}: not readable as a checkpoint config ({exc})") from exc
    if cfg.get("model_type") not in MGM_TYPES:
        raise MgmInteropError(f"{path}: model_type {cfg.get('model_type')!r} is not a Mini-Gemini checkpoint "
                              f"(expected one of {sorted(MGM_TYPES)})")
    for key in ("mm_vision_tower", "mm_vision_tower_aux", "mm_hidden_size"):
        if key not in cfg:
            raise MgmInteropError(f"{path}: no {key!r}; MGM writes it for every model with both towers")
    # (what bettersynth's Mini-Gemini has, MGM's default when the key is absent)
    only = {"mm_projector_type": ("mlp2x_gelu", "linear"), "mm_vision_select_feature": ("patch", "patch"),
            "image_grid": (1, 1), "image_global": (False, False), "mm_use_im_start_end": (False, False)}
    for key, (ours, default) in only.items():
        if cfg.get(key, default) != ours:
            raise MgmInteropError(f"{path}: {key}={cfg.get(key, default)!r} is not supported (bettersynth's "
                                  f"Mini-Gemini has {ours!r} only)")
    return cfg


def read_weights(folder: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a HF-style checkpoint folder: safetensors or .bin, one file or shards with an index."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index).is_file():
            files = sorted(set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()))
        elif (folder / single).is_file():
            files = [single]
        else:
            continue
        weights: dict[str, torch.Tensor] = {}
        for name in files:
            path = folder / name
            weights |= load_file(path) if path.suffix == ".safetensors" else torch.load(
                path, map_location="cpu", weights_only=True)
        return weights
    raise MgmInteropError(f"{folder}: no model.safetensors, pytorch_model.bin or their .index.json")


def _empty_out(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise MgmInteropError(f"{out_dir}: output folder exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _local(name: str | None, src: Path) -> Path | None:
    """The folder a tower name in an MGM config points to: as given, else relative to the checkpoint."""
    if not name:
        return None
    for path in (Path(name), src / name):
        if path.is_dir():
            return path
    return None


def _vision(cfg: dict[str, Any], src: Path, vision_tower: Path | str | None) -> tuple[Any, Path | None]:
    """The CLIP vision config, and the folder it came from (for its image processor)."""
    from transformers import CLIPVisionConfig

    folder = Path(vision_tower) if vision_tower else None
    if folder is None and EXTRA_KEY in cfg:
        return CLIPVisionConfig.from_dict(cfg[EXTRA_KEY]["vision_config"]), None
    folder = folder or _local(cfg["mm_vision_tower"], src)
    if folder is None:
        raise MgmInteropError(f"{src / 'config.json'}: mm_vision_tower {cfg['mm_vision_tower']!r} is not a local "
                              "folder; pass the CLIP tower's folder (vision_tower / --vision-tower)")
    try:
        return CLIPVisionConfig.from_pretrained(folder, local_files_only=True), folder
    except (OSError, ValueError) as exc:
        raise MgmInteropError(f"{folder}: not a Hugging Face CLIP checkpoint ({exc})") from exc


def _aux(cfg: dict[str, Any], src: Path, vision_tower_aux: Path | str | None) -> Any:
    """The aux tower spec (without weights: they are the checkpoint's) at MGM's ``image_size_aux``."""
    from bettersynth.vlm.aux_tower import AuxTowerSpec
    from bettersynth.vlm.open_clip_vision import CONFIG_FILE, read_open_clip_config

    size = int(cfg.get("image_size_aux", 320))  # MGM's default when the key is absent (mgm_arch.py)
    folder = Path(vision_tower_aux) if vision_tower_aux else None
    if folder is None and EXTRA_KEY in cfg:
        spec = AuxTowerSpec.model_validate(cfg[EXTRA_KEY]["aux_tower"])
        return spec.model_copy(update={"image_size": size, "checkpoint": None})
    folder = folder or _local(cfg["mm_vision_tower_aux"], src)
    if folder is None or not (folder / CONFIG_FILE).is_file():
        raise MgmInteropError(f"{src / 'config.json'}: mm_vision_tower_aux {cfg['mm_vision_tower_aux']!r} is not a "
                              f"local open_clip folder ({CONFIG_FILE}); pass it (vision_tower_aux / --vision-tower-aux)")
    model_cfg = read_open_clip_config(folder)["model_cfg"]
    return AuxTowerSpec(preset=f"local-dir:{folder.name}", image_size=size, model_cfg=model_cfg)


def _processor(src: Path, vision_dir: Path | None, vcfg: Any, aux_size: int) -> Any:
    """The checkpoint's own LlavaProcessor (our export saves one), else one built from the CLIP folder."""
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        CLIPImageProcessor,
        LlavaProcessor,
    )

    from bettersynth.vlm.builder import IMAGE_TOKEN

    if (src / "processor_config.json").is_file():
        processor = AutoProcessor.from_pretrained(src, local_files_only=True)
        if isinstance(processor, LlavaProcessor):
            return processor
    if vision_dir is None:
        raise MgmInteropError(f"{src}: no image processor saved and no CLIP folder to read one from; "
                              "pass the CLIP tower's folder (vision_tower / --vision-tower)")
    if (aux_size * vcfg.patch_size) % vcfg.image_size or aux_size * vcfg.patch_size // vcfg.image_size == 0:
        raise MgmInteropError(f"image_size_aux {aux_size} does not scale the CLIP patch "
                              f"{vcfg.patch_size} px of {vcfg.image_size} px to whole pixels")
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    image_processor = CLIPImageProcessor.from_pretrained(vision_dir, local_files_only=True)
    image_processor = CLIPImageProcessor.from_dict(  # one processor at the aux size, as build_mini_gemini saves
        image_processor.to_dict(), size={"shortest_edge": aux_size}, crop_size={"height": aux_size, "width": aux_size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=aux_size * vcfg.patch_size // vcfg.image_size,
        vision_feature_select_strategy="default", chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
    )


def import_mgm(src_dir: Path | str, out_dir: Path | str, vision_tower: Path | str | None = None,
               vision_tower_aux: Path | str | None = None) -> Path:
    """Write the MGM checkpoint at ``src_dir`` as a bettersynth Mini-Gemini folder (model + processor).

    The model reads its aux map as MGM's code does; its mining window is MGM's: the first ConvNeXt
    stage's grid over the CLIP token grid.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from bettersynth.vlm.builder import IMAGE_TOKEN
    from bettersynth.vlm.mgm import MiniGeminiConfig, MiniGeminiForConditionalGeneration, mgm_mining_window

    src = Path(src_dir)
    cfg = read_mgm_config(src)
    out = _empty_out(Path(out_dir))
    weights = {}
    for key, tensor in read_weights(src).items():
        if key.endswith(DERIVED_THEIRS):
            continue
        ours = rename(key, to_mgm=False)
        if ours is None:
            raise MgmInteropError(f"{src}: MGM weight {key!r} has no counterpart in bettersynth's Mini-Gemini")
        weights[ours] = tensor
    vcfg, vision_dir = _vision(cfg, src, vision_tower)
    aux = _aux(cfg, src, vision_tower_aux)
    try:
        window = mgm_mining_window(vcfg, aux)
    except ValueError as exc:  # MGM's own reshape fails on such a checkpoint too
        raise MgmInteropError(f"{src / 'config.json'}: image_size_aux {aux.image_size}: {exc}") from exc
    processor = _processor(src, vision_dir, vcfg, aux.image_size)
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = {k: v for k, v in cfg.items() if k not in MGM_CONFIG_KEYS and k not in (EXTRA_KEY, "architectures")}
    hf_type = MGM_TYPES[text.pop("model_type")]
    text_config = CONFIG_MAPPING[hf_type].from_dict({**text, "architectures": [LM_TYPES[hf_type][2]]})
    _add_image_rows(weights, image_id + 1, text_config)
    config = MiniGeminiConfig(
        vision_config=vcfg, text_config=text_config, aux_tower=aux.model_dump(), aux_features="mgm",
        mining_window=window, image_token_index=image_id,
        image_seq_length=(vcfg.image_size // vcfg.patch_size) ** 2,
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -1)), vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        **{STASH: {k: cfg[k] for k in MGM_CONFIG_KEYS if k in cfg}},
    )
    model = MiniGeminiForConditionalGeneration(config)
    channels = model.model.aux_tower.channels
    if "mm_hidden_size_aux" in cfg and int(cfg["mm_hidden_size_aux"]) != channels:
        raise MgmInteropError(f"{src / 'config.json'}: mm_hidden_size_aux={cfg['mm_hidden_size_aux']}, but the aux "
                              f"tower's {len(model.model.aux_tower.trunk.feature_info)} ConvNeXt stages sum to "
                              f"{channels} channels (MGM concatenates them all); is mm_vision_tower_aux the right tower?")
    _load_exact(model, weights, src)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info("imported MGM checkpoint %s into %s", src, out)
    return out


def _add_image_rows(weights: dict[str, torch.Tensor], rows: int, text_config: Any) -> None:
    """Grow the embedding (and an untied LM head) to hold the ``<image>`` token, each new row the mean row."""
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        table = weights.get(key)
        if table is not None and table.shape[0] < rows:
            grow = table.mean(0, keepdim=True).expand(rows - table.shape[0], -1)
            weights[key] = torch.cat([table, grow.to(table.dtype)])
    text_config.vocab_size = max(text_config.vocab_size, rows)


def _load_exact(model: Any, weights: dict[str, torch.Tensor], src: Path) -> None:
    """Load every weight as stored (dtype kept); a missing, extra or misshapen one is an error naming it."""
    expected = model.state_dict()
    tied = model.config.tie_word_embeddings
    skip = {k for k in expected if k.startswith(UNREAD_OURS)} | ({"lm_head.weight"} if tied else set())
    head = weights.pop("lm_head.weight", None) if tied else None  # tied: one tensor (MGM's Gemma saves it once)
    if head is not None and not torch.equal(head, weights.get("model.language_model.embed_tokens.weight", head)):
        raise MgmInteropError(f"{src}: tie_word_embeddings is set but MGM weight 'lm_head.weight' differs from "
                              "'model.embed_tokens.weight'")
    missing = sorted(set(expected) - set(weights) - skip)
    if missing:
        raise MgmInteropError(f"{src}: no MGM weight {rename(missing[0], to_mgm=True)!r} "
                              f"({len(missing)} missing); bettersynth's Mini-Gemini needs it")
    for key, tensor in weights.items():
        if key not in expected:
            raise MgmInteropError(f"{src}: MGM weight {rename(key, to_mgm=True)!r} has no counterpart in bettersynth's "
                                  "Mini-Gemini")
        if tensor.shape != expected[key].shape:
            raise MgmInteropError(f"{src}: MGM weight {rename(key, to_mgm=True)!r} has shape {tuple(tensor.shape)}, "
                                  f"bettersynth's Mini-Gemini expects {tuple(expected[key].shape)}")
    dtype = weights["model.language_model.embed_tokens.weight"].dtype
    model.to(dtype)
    model.load_state_dict(weights, strict=False, assign=True)
    if tied:
        model.tie_weights()


def mgm_aux_mismatch(model: Any) -> str | None:
    """Why MGM's code would compute this model's image features differently, or None when it computes them alike."""
    from bettersynth.vlm.aux_tower import AuxTowerSpec
    from bettersynth.vlm.mgm import mgm_mining_window

    config = model.config
    if config.aux_features != "mgm":
        return (f"its mining reads the aux tower as {config.aux_features!r} ({model.model.aux_tower.channels} "
                "channels), MGM's all ConvNeXt stages concatenated at the first stage's grid; it was built before "
                "bettersynth read the aux tower as MGM does: rebuild it (build_mini_gemini) and retrain the mining")
    try:
        window = mgm_mining_window(config.vision_config, AuxTowerSpec.model_validate(config.aux_tower))
    except ValueError as exc:
        return str(exc)
    if config.mining_window != window:
        return (f"mining_window {config.mining_window}, but MGM's code mines the {window}x{window} stage-0 cells "
                "under each CLIP token")
    return None


def export_mgm(src_dir: Path | str, out_dir: Path | str, vision_tower: str | None = None,
               vision_tower_aux: str | None = None) -> Path:
    """Write the bettersynth Mini-Gemini at ``src_dir`` in MGM's layout (config, weights, tokenizer).

    ``vision_tower``/``vision_tower_aux`` are written as ``mm_vision_tower``/``mm_vision_tower_aux``: MGM's
    loader opens them as local folders (its CLIP path must contain "openai", the aux one "openclip").
    A model MGM's code would compute other image features for is refused (``mgm_aux_mismatch``).
    """
    from safetensors.torch import save_file

    from bettersynth.vlm import load_vlm, vlm_model_type

    src = Path(src_dir)
    try:
        model_type = vlm_model_type(src)
    except ValueError as exc:
        raise MgmInteropError(str(exc)) from exc
    if model_type != "bettersynth_mgm":
        raise MgmInteropError(f"{src / 'config.json'}: model_type {model_type!r} is not bettersynth's "
                              "Mini-Gemini ('bettersynth_mgm')")
    vlm = load_vlm(src)
    model, config = vlm.model, vlm.model.config
    text = config.text_config.to_dict()
    if text.get("model_type") not in LM_TYPES:
        raise MgmInteropError(f"{src}: language model {text.get('model_type')!r} has no MGM class "
                              f"(MGM has {sorted(LM_TYPES)})")
    for key, want in (("projector_hidden_act", "gelu"), ("vision_feature_select_strategy", "default"),
                      ("multimodal_projector_bias", True)):
        if getattr(config, key, want) != want:
            raise MgmInteropError(f"{src}: {key}={getattr(config, key)!r}; MGM's mlp2x_gelu patch projector "
                                  f"needs {want!r}")
    if not isinstance(config.vision_feature_layer, int):
        raise MgmInteropError(f"{src}: vision_feature_layer {config.vision_feature_layer!r}; MGM selects one layer")
    mismatch = mgm_aux_mismatch(model)
    if mismatch:
        raise MgmInteropError(f"{src}: not exportable to MGM: {mismatch}")
    out = _empty_out(Path(out_dir))

    weights: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(UNREAD_OURS) or (key == "lm_head.weight" and config.tie_word_embeddings):
            continue
        theirs = rename(key, to_mgm=True)
        if theirs is None:
            raise MgmInteropError(f"{src}: weight {key!r} has no counterpart in MGM's layout")
        weights[theirs] = tensor.detach().contiguous()
    shard = "model-00001-of-00001.safetensors"
    save_file(weights, out / shard, metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in weights.values())},
             "weight_map": {k: shard for k in sorted(weights)}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    vlm.processor.save_pretrained(out)  # tokenizer files for MGM, the processor for the way back
    model.generation_config.save_pretrained(out)
    (out / "config.json").write_text(json.dumps(_mgm_config(model, vlm.processor.tokenizer, vision_tower,
                                                            vision_tower_aux), indent=2) + "\n", encoding="utf-8")
    logger.info("exported %s in MGM's layout to %s", src, out)
    return out


def _mgm_config(model: Any, tokenizer: Any, vision_tower: str | None, vision_tower_aux: str | None) -> dict[str, Any]:
    """The LM config plus MGM's keys: fixed by this model where it decides them, else as imported, else MGM's defaults."""
    config = model.config
    text = config.text_config.to_dict()
    mgm_type, mgm_class, _ = LM_TYPES[text["model_type"]]
    for key in ("_name_or_path", "transformers_version", "architectures"):
        text.pop(key, None)
    if "rope_theta" not in text and "rope_theta" in (text.get("rope_parameters") or {}):
        text["rope_theta"] = text["rope_parameters"]["rope_theta"]  # what MGM's transformers 4.x reads
    if "dtype" in text:
        text["torch_dtype"] = text["dtype"]
    defaults = {
        "mm_vision_tower": config.vision_config._name_or_path or "openai/clip-vit-large-patch14-336",
        "mm_vision_tower_aux": config.aux_tower["preset"], "use_mm_proj": True, "optimize_vision_tower": False,
        "image_grid": 1, "image_global": False, "image_aspect_ratio": "square", "image_grid_pinpoints": None,
        "tokenizer_padding_side": tokenizer.padding_side, "tokenizer_model_max_length": tokenizer.model_max_length,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "mm_projector_lr": None,
    }
    decided = {
        "mm_hidden_size": config.vision_config.hidden_size, "mm_hidden_size_aux": model.model.aux_tower.channels,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": config.vision_feature_layer,
        "mm_vision_select_feature": "patch", "image_size_aux": config.aux_tower["image_size"],
        "optimize_vision_tower_aux": True,  # MGM's loader then takes the aux weights from this checkpoint
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,  # True would make MGM add a token and resize
        "tie_word_embeddings": config.tie_word_embeddings,
    }
    named = {k: v for k, v in (("mm_vision_tower", vision_tower), ("mm_vision_tower_aux", vision_tower_aux)) if v}
    extra = {EXTRA_KEY: {"vision_config": config.vision_config.to_dict(),
                         "aux_tower": {**config.aux_tower, "checkpoint": None}}}
    return {**text, **defaults, **getattr(config, STASH, {}), **decided, **named, **extra,
            "model_type": mgm_type, "architectures": [mgm_class]}
