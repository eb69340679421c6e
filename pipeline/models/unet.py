"""U-Net baseline (Table 1, first row): a 2D U-Net on the target frame, or on the whole clip as channels."""

from __future__ import annotations

from torch import Tensor, nn

from pipeline.models.base import SegmentationModel, check_choice
from pipeline.models.blocks import UNetCore

FRAME_MODES = ("middle", "clip")


class UNet(SegmentationModel):
    """Plain U-Net: (B, 2r+1, H, W) -> (B, num_classes, H, W).

    ``frames="middle"`` (default, the per-frame baseline) segments the target frame alone and ignores its
    neighbours; ``frames="clip"`` stacks the 2r+1 frames as input channels (early fusion).
    """

    name = "unet"
    attention_gates = False  # AttentionUNet: the same network with gated skip connections

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        frames: str = "middle",
    ) -> None:
        super().__init__()
        self.frames = check_choice("frames", frames, FRAME_MODES)
        in_channels = 1 if frames == "middle" else self.in_frames
        self.core = UNetCore(in_channels, base_channels, depth, norm, attention_gates=self.attention_gates)
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def _forward(self, clip: Tensor) -> Tensor:
        x = self.middle_frame(clip) if self.frames == "middle" else clip
        return self.head(self.core(x))
