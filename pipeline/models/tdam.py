"""TDAM: Temporal Deformable Aggregation Module (DeU-Net paper, Sec. 2.1, Eq. 1-2).

An offset-prediction U-Net looks at the whole clip (the 2r+1 frames stacked as channels; max-pool down,
transposed convolutions up, stride-1 zero-padded convolutions) and predicts, for every frame t and pixel k,
the 2*S*S offsets delta_(t,k) of an S x S kernel (optionally S*S modulation masks too). One deformable
convolution with one offset group per frame then fuses the clip into features of the target frame:
    F(k) = sum_t sum_s K_(t,s) * C_t(k + k_s + delta_(t,k),s)
The offset head is zero-initialised, so an untrained TDAM is exactly Early Fusion (Eq. 1), a plain
S x S convolution over the stacked frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pipeline.models.base import ModelConfigError, check_int
from pipeline.models.blocks import UNetCore
from pipeline.models.deform_conv import deform_conv2d


class TDAM(nn.Module):
    """(B, T, H, W) clip, T = 2r+1 -> (B, out_channels, H, W) fused features of the middle frame.

    Args:
        frames: T, the clip length.
        out_channels: N, channels of the fused features.
        kernel_size: S (odd), the deformable kernel size (paper: 3).
        offset_channels / offset_depth: width and depth of the offset-prediction U-Net.
        modulated: also predict S*S masks per frame (DCNv2), squashed as 2*sigmoid so they start at 1.
        offset_scale: multiplies the predicted offsets (slows their learning relative to the weights).
    """

    def __init__(
        self,
        frames: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        offset_channels: int = 8,
        offset_depth: int = 3,
        norm: str = "instance",
        modulated: bool = False,
        offset_scale: float = 0.1,
    ) -> None:
        super().__init__()
        check_int("frames", frames, minimum=1)
        check_int("out_channels", out_channels, minimum=1)
        check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ModelConfigError(
                f"kernel_size (S) must be odd so the fused map keeps the frame size, got {kernel_size}"
            )
        check_int("offset_channels", offset_channels, minimum=2)
        check_int("offset_depth", offset_depth, minimum=1)
        if not offset_scale > 0:
            raise ModelConfigError(f"offset_scale must be > 0, got {offset_scale}")
        self.frames, self.kernel_size, self.modulated = frames, kernel_size, modulated
        self.offset_scale = float(offset_scale)
        taps = kernel_size * kernel_size
        self.offset_net = UNetCore(frames, offset_channels, offset_depth, norm)
        self.offset_head = nn.Conv2d(offset_channels, (3 if modulated else 2) * frames * taps, 3, padding=1)
        nn.init.zeros_(self.offset_head.weight)
        assert self.offset_head.bias is not None
        nn.init.zeros_(self.offset_head.bias)
        # Fusion kernel K_t for every frame t: weight (N, T, S, S), one offset group per frame (1 channel each).
        self.weight = nn.Parameter(torch.empty(out_channels, frames, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(frames * taps)
        nn.init.uniform_(self.bias, -bound, bound)

    def predict_offsets(self, clip: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, T, H, W) -> offsets (B, 2*T*S*S, H, W) in torchvision layout, masks (B, T*S*S, H, W) or None."""
        out = self.offset_head(self.offset_net(clip))
        n_off = 2 * self.frames * self.kernel_size**2
        offset = out[:, :n_off] * self.offset_scale
        return offset, (2 * torch.sigmoid(out[:, n_off:]) if self.modulated else None)

    def fuse(self, clip: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """The temporal aggregation deformable convolution alone: (B, T, H, W) -> (B, N, H, W)."""
        return torch.relu(
            deform_conv2d(clip, offset, self.weight, self.bias, mask, padding=self.kernel_size // 2)
        )

    def forward(self, clip: Tensor) -> Tensor:
        offset, mask = self.predict_offsets(clip)
        return self.fuse(clip, offset, mask)


class EarlyFusion(nn.Module):
    """DeU-Net(t)'s replacement for TDAM (Eq. 1): a plain S x S convolution over the stacked frames + ReLU.

    (B, T, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, frames: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ModelConfigError(
                f"kernel_size (S) must be odd so the fused map keeps the frame size, got {kernel_size}"
            )
        self.conv = nn.Conv2d(frames, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, clip: Tensor) -> Tensor:
        return torch.relu(self.conv(clip))
