"""Position attention (DANet's PAM) as DGPA uses it: Eq. 4-5 of the DeU-Net paper.

Given deformable features O (B, N, H, W), with M = H*W pixels:
    B = W_b O, C = W_c O  (B, N', M), N' = max(N // reduction, 1)
    D = W_d O             (B, N, M)
    P = softmax_i(B_i . C_j)  (M x M; p_ji is the impact of pixel i on pixel j)
    Z_j = alpha * sum_i p_ji D_i + O_j
alpha is a learned scalar initialised to 0, so the block starts as the identity on O. The attention map
is M x M, so the block belongs where M is small (DGPA puts it at the U-Net bottleneck).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.base import check_int


class PositionAttention(nn.Module):
    """(B, N, H, W) -> (B, N, H, W); identity while ``alpha`` is 0."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        check_int("channels", channels, minimum=1)
        check_int("reduction", reduction, minimum=1)
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)  # B in the paper
        self.key = nn.Conv2d(channels, inner, 1)  # C
        self.value = nn.Conv2d(channels, channels, 1)  # D
        self.alpha = nn.Parameter(torch.zeros(1))

    def attention_map(self, x: Tensor) -> Tensor:
        """(B, N, H, W) -> P (B, M, M), rows j (target pixel) summing to 1 over i (source pixel)."""
        b, _, h, w = x.shape
        q = self.query(x).view(b, -1, h * w)  # (B, N', M)
        k = self.key(x).view(b, -1, h * w)
        energy = torch.bmm(q.transpose(1, 2), k)  # (B, M, M): energy[j, i] = B_j . C_i
        return torch.softmax(energy, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.attention_map(x)
        v = self.value(x).view(b, c, h * w)  # (B, N, M)
        out = torch.bmm(v, p.transpose(1, 2)).view(b, c, h, w)  # out[:, :, j] = sum_i p[j, i] v[:, :, i]
        return self.alpha * out + x
