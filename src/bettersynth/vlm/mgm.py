"""Mini-Gemini-style LLaVA: a low-res CLIP tower, a high-res ConvNeXt aux tower, patch info mining.

Why this shape: it is ``LlavaForConditionalGeneration`` with two extra
submodules (``model.aux_tower``, ``model.patch_mining``) and one overridden
method, so the trainer, the freezing table, the processor and
``save_pretrained``/``from_pretrained`` work unchanged. The model takes the
*high-res* image as ``pixel_values`` and downsamples it to the CLIP tower's
size itself, so one image processor (at the aux size) feeds both towers; its
processor's ``patch_size`` is scaled by aux/low so the number of ``<image>``
tokens stays that of the low-res grid.

The image features are computed as MGM's (dvlab-research/MGM) ``encode_images``
does (``aux_features="mgm"``): the low-res image is the high-res one downsampled
bilinearly, the aux map is every ConvNeXt stage at stage 0's grid, each token
mines the ``mining_window`` x ``mining_window`` cells under it. Configs saved
before ``aux_features`` existed load as ``"last_stage"``, computing what they
were trained with.

Example::

    window = mgm_mining_window(clip_cfg, AuxTowerSpec())  # 768 px / 4 = 192 cells over 24 tokens: 8
    config = MiniGeminiConfig(vision_config=clip_cfg, text_config=lm_cfg, aux_tower=AuxTowerSpec().model_dump(),
                              mining_window=window, image_token_index=image_id)
    model = MiniGeminiForConditionalGeneration(config)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, LlavaConfig, LlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import LlavaModel, LlavaMultiModalProjector, LlavaPreTrainedModel

from bettersynth.vlm.aux_tower import AUX_FEATURES, AuxFeatures, AuxTowerSpec, aux_grid, build_aux_tower
from bettersynth.vlm.mining import PatchInfoMining, window_for

LEGACY_AUX_FEATURES: AuxFeatures = "last_stage"  # what a saved config without ``aux_features`` was built with


class MiniGeminiConfig(LlavaConfig):
    """``LlavaConfig`` plus the aux tower, how its map is read, and the mining window."""

    model_type = "bettersynth_mgm"

    def __init__(self, aux_tower: dict[str, Any] | None = None, mining_window: int = 2,
                 aux_features: AuxFeatures = "mgm", **kwargs: Any) -> None:
        if aux_features not in AUX_FEATURES:
            raise ValueError(f"aux_features {aux_features!r}: expected one of {sorted(AUX_FEATURES)}")
        self.aux_tower = AuxTowerSpec.model_validate(aux_tower or {}).model_dump()  # open_clip ConvNeXt spec
        self.aux_features = aux_features  # the aux map the mining reads (AUX_FEATURES)
        self.mining_window = mining_window  # high-res cells per low-res token along each side
        super().__init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> MiniGeminiConfig:
        """A saved config; one from before ``aux_features`` keeps the last-stage reading it was trained with."""
        return super().from_dict({"aux_features": LEGACY_AUX_FEATURES, **config_dict}, **kwargs)


def mgm_mining_window(vision_config: Any, aux: AuxTowerSpec) -> int:
    """MGM's window for these towers: the aux stage-0 grid over the CLIP token grid (ValueError unless it divides)."""
    return window_for(aux_grid(aux, "mgm"), vision_config.image_size // vision_config.patch_size)


class MiniGeminiModel(LlavaModel):
    config_class = MiniGeminiConfig

    def __init__(self, config: MiniGeminiConfig) -> None:
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        spec = AuxTowerSpec.model_validate(config.aux_tower)
        self.aux_tower = build_aux_tower(spec.model_copy(update={"checkpoint": None}),  # weights: the checkpoint's
                                         config.aux_features)
        self.patch_mining = PatchInfoMining(config.vision_config.hidden_size, self.aux_tower.channels,
                                            config.mining_window)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Low-res CLIP tokens, enriched by mining the high-res map, then projected."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        if not isinstance(layer, int):
            raise ValueError(f"vision_feature_layer {layer!r}: Mini-Gemini mining takes one layer")
        low_size = self.config.vision_config.image_size
        low_pixels = pixel_values
        if pixel_values.shape[-1] != low_size or pixel_values.shape[-2] != low_size:
            low_pixels = F.interpolate(pixel_values, size=(low_size, low_size), mode="bilinear",
                                       align_corners=False, antialias=self.aux_tower.reading.antialias)
        outputs = self.vision_tower(low_pixels, output_hidden_states=True, return_dict=True)
        tokens = outputs.hidden_states[layer]
        if strategy == "default":
            tokens = tokens[:, 1:]
        aux = self.aux_tower(pixel_values.to(next(self.aux_tower.parameters()).dtype))
        features = self.multi_modal_projector(self.patch_mining(tokens, aux))
        outputs.pooler_output = list(features)
        return outputs


class MiniGeminiForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = MiniGeminiConfig

    def __init__(self, config: MiniGeminiConfig) -> None:
        LlavaPreTrainedModel.__init__(self, config)
        self.model = MiniGeminiModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
