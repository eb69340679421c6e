"""Building blocks shared by the U-Net family: conv blocks, the encoder-decoder core, attention gates.

``UNetCore`` is the backbone every U-Net-like model here reuses: it maps (B, C_in, H, W) to full-resolution
features (B, base_channels, H, W); the model adds its own 1x1 head. Level ``l`` (0..depth) works at
H / 2**l with ``base_channels * 2**l`` channels; max-pooling goes down, transposed convolutions go up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pipeline.models.deform_conv import DeformConv2d


def norm_layer(norm: str, channels: int) -> nn.Module:
    """InstanceNorm (affine, no running stats: same in train and eval) or BatchNorm."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")


class ConvBlock(nn.Module):
    """Two (3x3 conv, norm, ReLU) layers, stride 1, zero padding: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class DeformConvBlock(nn.Module):
    """ConvBlock whose 3x3 convolutions are deformable, each with its own zero-initialised offset conv.

    ``deformable`` says how many of the two convolutions are deformable (the first ones), so cost can be
    traded against flexibility. (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm: str, deformable: int = 2, offset_scale: float = 1.0
    ) -> None:
        super().__init__()

        def conv(c_in: int, index: int) -> nn.Module:
            if index < deformable:
                return DeformConv2d(c_in, out_channels, 3, padding=1, bias=False, offset_scale=offset_scale)
            return nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False)

        self.body = nn.Sequential(
            conv(in_channels, 0),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, 1),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., Attention U-Net) on a skip connection.

    ``skip`` (B, C_s, H, W) is scaled per pixel by sigmoid(psi(ReLU(W_x skip + W_g gate))), where ``gate``
    (B, C_g, H, W) are the decoder features at the same resolution. Returns (B, C_s, H, W).
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_x = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, skip: Tensor, gate: Tensor) -> Tensor:
        alpha = torch.sigmoid(self.psi(torch.relu(self.w_x(skip) + self.w_g(gate))))
        return skip * alpha


EncoderBlock = Callable[[int, int, str], nn.Module]


class UNetCore(nn.Module):
    """Encoder-decoder with skips: (B, in_channels, H, W) -> (B, base_channels, H, W).

    Args:
        encoder_block: builds the conv block of each encoder level (``ConvBlock`` or a deformable one).
        bottleneck: optional module applied to the deepest features (B, base*2**depth, H/2**depth, W/2**depth),
            shape-preserving (DGPA's position attention).
        attention_gates: gate each skip with the upsampled decoder features (Attention U-Net).
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int,
        depth: int,
        norm: str,
        *,
        encoder_block: EncoderBlock = ConvBlock,
        bottleneck: nn.Module | None = None,
        attention_gates: bool = False,
    ) -> None:
        super().__init__()
        chans = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [
                encoder_block(in_channels if level == 0 else chans[level - 1], chans[level], norm)
                for level in range(depth + 1)
            ]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = bottleneck if bottleneck is not None else nn.Identity()
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(chans[lv + 1], chans[lv], 2, stride=2) for lv in range(depth)]
        )
        self.gates = nn.ModuleList(
            [AttentionGate(chans[lv], chans[lv], max(chans[lv] // 2, 1)) for lv in range(depth)]
            if attention_gates
            else []
        )
        self.decoders = nn.ModuleList([ConvBlock(2 * chans[lv], chans[lv], norm) for lv in range(depth)])
        self.out_channels = base_channels

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for level in reversed(range(len(self.ups))):
            x = self.ups[level](x)
            skip = skips[level]
            if len(self.gates):
                skip = self.gates[level](skip, x)
            x = self.decoders[level](torch.cat([skip, x], dim=1))
        return x
