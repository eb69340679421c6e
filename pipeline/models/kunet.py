"""kU-Net baseline (Chen et al. 2016), modified for clips: per-frame U-Net features, then a bidirectional
convolutional LSTM across the 2r+1 frames; the two hidden states at the target frame are classified."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.base import SegmentationModel, check_int
from pipeline.models.blocks import UNetCore


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: x (B, C_in, H, W), (h, c) (B, C_h, H, W) each -> new (h, c)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class KUNet(SegmentationModel):
    """(B, 2r+1, H, W) -> (B, num_classes, H, W).

    A shared U-Net turns every frame into (B, base_channels, H, W) features; a forward ConvLSTM runs over
    frames 0..r and a backward one over frames 2r..r; their hidden states at the target frame r are
    concatenated and classified by a 1x1 convolution.
    """

    name = "kunet"

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden = (
            base_channels
            if hidden_channels is None
            else check_int("hidden_channels", hidden_channels, minimum=1)
        )
        self.core = UNetCore(1, base_channels, depth, norm)
        self.forward_cell = ConvLSTMCell(base_channels, hidden)
        self.backward_cell = ConvLSTMCell(base_channels, hidden)
        self.head = nn.Conv2d(2 * hidden, num_classes, 1)

    def _forward(self, clip: Tensor) -> Tensor:
        b, t, h, w = clip.shape
        feats = self.core(clip.reshape(b * t, 1, h, w)).view(b, t, -1, h, w)
        r = self.radius
        state = None
        for step in range(r + 1):
            state = self.forward_cell(feats[:, step], state)
        assert state is not None
        h_forward = state[0]
        state = None
        for step in range(t - 1, r - 1, -1):
            state = self.backward_cell(feats[:, step], state)
        assert state is not None
        return self.head(torch.cat([h_forward, state[0]], dim=1))
