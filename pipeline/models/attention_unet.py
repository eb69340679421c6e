"""Attention U-Net baseline (Oktay et al. 2018): additive attention gates on every skip connection."""

from __future__ import annotations

from torch import Tensor, nn

from pipeline.models.base import SegmentationModel, check_choice
from pipeline.models.blocks import UNetCore
from pipeline.models.unet import FRAME_MODES


class AttentionUNet(SegmentationModel):
    """U-Net whose skips are gated by the decoder: (B, 2r+1, H, W) -> (B, num_classes, H, W).

    Modified for clips as in the paper: by default (``frames="clip"``) the 2r+1 frames enter as channels;
    ``frames="middle"`` gives the original per-frame network.
    """

    name = "attention_unet"

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        frames: str = "clip",
    ) -> None:
        super().__init__(
            radius=radius,
            num_classes=num_classes,
            base_channels=base_channels,
            depth=depth,
            norm=norm,
            input_size=input_size,
            config={"frames": frames},
        )
        self.frames = check_choice("frames", frames, FRAME_MODES)
        in_channels = 1 if frames == "middle" else self.in_frames
        self.core = UNetCore(in_channels, base_channels, depth, norm, attention_gates=True)
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def _forward(self, clip: Tensor) -> Tensor:
        x = self.middle_frame(clip) if self.frames == "middle" else clip
        return self.head(self.core(x))
