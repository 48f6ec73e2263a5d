"""Mini-Gemini's patch info mining: each low-res token attends to its window of high-res features.

Why: a low-res CLIP token (e.g. 14 px of a 336 px image) cannot see fine
detail such as text; the high-res aux tower can. Letting every low-res token
query only the k x k high-res cells under it keeps the token count (and the
LLM's cost) unchanged while adding the detail. The mined result is added to
the low-res features before the projector (Li et al. 2024, arXiv 2403.18814).
The arithmetic is MGM's (``unified_resampler`` in dvlab-research/MGM's
``mgm_arch.py``), so an MGM checkpoint's ``vlm_uni_*_projector`` weights compute
the same features here.

Example::

    mining = PatchInfoMining(low_dim=1024, aux_dim=2880, window=8)
    enriched = mining(clip_tokens, convnext_map)  # (B, 576, 1024), same shape as clip_tokens
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def window_for(aux_grid: int, token_grid: int) -> int:
    """MGM's window: aux map cells per CLIP token along each side; the grids must divide exactly."""
    if token_grid < 1 or aux_grid < token_grid or aux_grid % token_grid:
        raise ValueError(f"the aux feature map's {aux_grid}x{aux_grid} grid is not a whole multiple of the CLIP "
                         f"token grid {token_grid}x{token_grid}: each token needs an equal window of aux cells "
                         "(pick an aux image_size whose first ConvNeXt stage divides by the token grid)")
    return aux_grid // token_grid


class PatchInfoMining(nn.Module):
    """Windowed cross-attention: queries from low-res tokens, keys/values from the high-res map."""

    def __init__(self, low_dim: int, aux_dim: int, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window  # high-res cells per low-res token along each side
        self.q = nn.Sequential(nn.LayerNorm(low_dim), nn.Linear(low_dim, low_dim))
        self.k = nn.Sequential(nn.LayerNorm(aux_dim), nn.Linear(aux_dim, low_dim))
        self.v = nn.Sequential(nn.LayerNorm(aux_dim), nn.Linear(aux_dim, low_dim))

    def windows(self, aux: torch.Tensor, side: int) -> torch.Tensor:
        """(B, C, H, W) -> (B, side*side, window*window, C): token (row, col) gets its cells row-major.

        A map of another size (a last-stage model's, or pixels not at the aux size) is resized to side*window first.
        """
        k = self.window
        if aux.shape[-2:] != (side * k, side * k):
            aux = F.interpolate(aux, size=(side * k, side * k), mode="bilinear", align_corners=False)
        b, c = aux.shape[:2]
        aux = aux.reshape(b, c, side, k, side, k).permute(0, 2, 4, 3, 5, 1)  # B, row, col, kr, kc, C
        return aux.reshape(b, side * side, k * k, c)

    def forward(self, low: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """``low``: (B, N, D) tokens on a square grid; ``aux``: (B, C, H, W). Returns ``low`` + mined detail."""
        side = math.isqrt(low.shape[1])
        if side * side != low.shape[1]:
            raise ValueError(f"{low.shape[1]} low-res tokens do not form a square grid")
        cells = self.windows(aux.to(low.dtype), side)  # B, N, k*k, C
        q = self.q(low).unsqueeze(2)  # B, N, 1, D
        k, v = self.k(cells), self.v(cells)  # B, N, k*k, D
        # As MGM: the keys are scaled by 1/sqrt(D) before the product, non-finite logits are made finite.
        logits = (q @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5)).nan_to_num()
        return low + (logits.softmax(-1) @ v).squeeze(2)
