"""Mini-Gemini's patch info mining: each low-res token attends to its window of high-res features.

Why: a low-res CLIP token (e.g. 14 px of a 336 px image) cannot see fine
detail such as text; the high-res aux tower can. Letting every low-res token
query only the k x k high-res cells under it keeps the token count (and the
LLM's cost) unchanged while adding the detail. The mined result is added to
the low-res features before the projector (Li et al. 2024, arXiv 2403.18814).

Example::

    mining = PatchInfoMining(low_dim=1024, aux_dim=1536, window=2)
    enriched = mining(clip_tokens, convnext_map)  # (B, 576, 1024), same shape as clip_tokens
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
        """(B, C, H, W) -> (B, side*side, window*window, C); resized first when H != side*window."""
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
        mined = F.scaled_dot_product_attention(q, k, v).squeeze(2)  # softmax(q k^T / sqrt(D)) v per window
        return low + mined
