"""DGPA: Deformable Global Position Attention network (DeU-Net paper, Sec. 2.2).

A U-Net on the fused features whose encoder blocks use deformable 3x3 convolutions (each with its own
zero-initialised offset conv, Eq. 3), with a position-attention block (Eq. 4-5) added at the bottleneck,
where the M x M attention map stays small (M = H*W / 4**depth).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from pipeline.models.base import check_int
from pipeline.models.blocks import DeformConvBlock, UNetCore
from pipeline.models.position_attention import PositionAttention


class DGPA(nn.Module):
    """(B, in_channels, H, W) features -> (B, base_channels, H, W) features.

    Args:
        deformable_per_block: how many of the two 3x3 convolutions of each encoder block are deformable
            (1 or 2); the rest are regular. The deformable ones dominate CPU cost.
        attention_reduction: channel reduction of the B and C projections of the attention block.
        offset_scale: multiplies the predicted offsets; < 1 slows the offsets' learning relative to the
            weights (like DCN's lower learning rate on offset layers), which keeps offsets on the small
            coarse maps from jumping off the image in the first steps.
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int,
        depth: int,
        norm: str,
        *,
        deformable_per_block: int = 1,
        attention_reduction: int = 8,
        offset_scale: float = 0.1,
    ) -> None:
        super().__init__()
        check_int("deformable_per_block", deformable_per_block, minimum=1, maximum=2)
        self.core = UNetCore(
            in_channels,
            base_channels,
            depth,
            norm,
            encoder_block=partial(
                DeformConvBlock, deformable=deformable_per_block, offset_scale=offset_scale
            ),
            bottleneck=PositionAttention(base_channels * 2**depth, attention_reduction),
        )
        self.out_channels = base_channels

    @property
    def attention(self) -> PositionAttention:
        """The position-attention block at the bottleneck (registered once, inside ``core``)."""
        block = self.core.bottleneck
        assert isinstance(block, PositionAttention)
        return block

    def forward(self, x: Tensor) -> Tensor:
        return self.core(x)
