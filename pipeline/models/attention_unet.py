"""Attention U-Net baseline (Oktay et al. 2018): additive attention gates on every skip connection."""

from __future__ import annotations

from pipeline.models.unet import UNet


class AttentionUNet(UNet):
    """U-Net whose skips are gated by the decoder: (B, 2r+1, H, W) -> (B, num_classes, H, W).

    Modified for clips as in the paper: by default (``frames="clip"``) the 2r+1 frames enter as channels;
    ``frames="middle"`` gives the original per-frame network.
    """

    name = "attention_unet"
    attention_gates = True

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
        # The signature is spelled out (not **kwargs): the registry and checkpoints read the arguments.
        super().__init__(radius, num_classes, base_channels, depth, norm, input_size, frames)
