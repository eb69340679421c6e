"""DeU-Net (TDAM + DGPA) and its two ablations of Table 1, DeU-Net(t) and DeU-Net(d).

DeU-Net     clip -> TDAM          -> DGPA (deformable encoder + position attention) -> 1x1 head
DeU-Net(t)  clip -> plain S x S conv (Early Fusion, no TDAM) -> DGPA                -> 1x1 head
DeU-Net(d)  clip -> TDAM          -> plain U-Net (no DGPA)                          -> 1x1 head
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from pipeline.models.base import SegmentationModel, check_int
from pipeline.models.blocks import UNetCore
from pipeline.models.dgpa import DGPA
from pipeline.models.tdam import TDAM, EarlyFusion


class _DeUNetFamily(SegmentationModel):
    """Shared constructor; subclasses only choose ``use_tdam`` and ``use_dgpa``.

    Shapes: (B, 2r+1, H, W) -> (B, num_classes, H, W); H, W multiples of 2**max(depth, offset_depth).

    Args:
        fused_channels: N, channels of the fused features (default: base_channels).
        kernel_size: S of the temporal deformable convolution (paper: 3).
        offset_channels / offset_depth: the offset-prediction U-Net of TDAM (the paper gives no width; 8
            keeps DeU-Net's CPU inference under 3x U-Net's and its parameter count near U-Net's).
        modulated: TDAM also predicts modulation masks (DCNv2).
        deformable_per_block: deformable 3x3 convs per DGPA encoder block (1 or 2).
        offset_scale: multiplier on every predicted offset (TDAM and DGPA); see ``DGPA``.
    Arguments of a part the variant lacks (TDAM's for DeU-Net(t), DGPA's for DeU-Net(d)) are accepted and
    ignored, so one config works for the whole family.
    """

    use_tdam: ClassVar[bool] = True
    use_dgpa: ClassVar[bool] = True

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        fused_channels: int | None = None,
        kernel_size: int = 3,
        offset_channels: int = 8,
        offset_depth: int = 3,
        modulated: bool = False,
        deformable_per_block: int = 1,
        offset_scale: float = 0.1,
    ) -> None:
        check_int("depth", depth, minimum=1)
        check_int("offset_depth", offset_depth, minimum=1)
        super().__init__(input_multiple=2 ** max(depth, offset_depth if self.use_tdam else 0))
        n = (
            base_channels
            if fused_channels is None
            else check_int("fused_channels", fused_channels, minimum=1)
        )
        check_int("kernel_size", kernel_size, minimum=1)
        self.fusion: nn.Module
        if self.use_tdam:
            self.fusion = TDAM(
                self.in_frames,
                n,
                kernel_size=kernel_size,
                offset_channels=offset_channels,
                offset_depth=offset_depth,
                norm=norm,
                modulated=modulated,
                offset_scale=offset_scale,
            )
        else:
            self.fusion = EarlyFusion(self.in_frames, n, kernel_size)
        self.backbone: nn.Module
        if self.use_dgpa:
            self.backbone = DGPA(
                n,
                base_channels,
                depth,
                norm,
                deformable_per_block=deformable_per_block,
                offset_scale=offset_scale,
            )
        else:
            self.backbone = UNetCore(n, base_channels, depth, norm)
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def _forward(self, clip: Tensor) -> Tensor:
        return self.head(self.backbone(self.fusion(clip)))


class DeUNet(_DeUNetFamily):
    """DeU-Net: TDAM fuses the clip, DGPA segments the fused features."""

    name = "deunet"


class DeUNetT(_DeUNetFamily):
    """DeU-Net(t): no TDAM, the frames enter a plain convolution (Early Fusion), then DGPA."""

    name = "deunet_t"
    use_tdam = False


class DeUNetD(_DeUNetFamily):
    """DeU-Net(d): TDAM, then a plain U-Net instead of DGPA."""

    name = "deunet_d"
    use_dgpa = False
