"""GridNet baseline with a registered shape prior (Zotti et al. 2019), modified for clips.

The network is a grid of residual streams (Fourure et al. 2017): ``depth + 1`` rows, one per resolution
(row i at H / 2**i with base_channels * (i + 1) channels), ``columns`` downsampling columns followed by
``columns`` upsampling columns, residual units along every row. The shape prior is a per-class
probability atlas (num_classes, Hp, Wp) built from training labels with ``set_prior``; a small head on
the coarsest row predicts a shift (dy, dx) that registers the atlas to the image, and the log of the
registered atlas is added, with a learned weight, to the logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.base import InputShapeError, SegmentationModel, check_choice, check_int
from pipeline.models.blocks import norm_layer
from pipeline.models.unet import FRAME_MODES

PRIOR_EPS = 1e-4


def _conv_norm_relu(c_in: int, c_out: int, norm: str, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        norm_layer(norm, c_out),
        nn.ReLU(inplace=True),
    ]


def _cell(grid: nn.ModuleList, outer: int, inner: int) -> nn.Module:
    """grid[outer][inner] for a ModuleList of ModuleLists, typed."""
    row = grid[outer]
    assert isinstance(row, nn.ModuleList)
    return row[inner]


class ResidualUnit(nn.Module):
    """Lateral unit of a row: relu(x + conv-norm-relu-conv-norm(x)); (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, norm),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            norm_layer(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


class GridNet(SegmentationModel):
    """(B, 2r+1, H, W) -> (B, num_classes, H, W) logits, shape prior included.

    Args:
        columns: downsampling columns (the same number of upsampling columns follows).
        frames: "clip" (default; frames as channels) or "middle" (target frame only).
    """

    name = "gridnet"

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        frames: str = "clip",
        columns: int = 2,
    ) -> None:
        super().__init__()
        self.frames = check_choice("frames", frames, FRAME_MODES)
        self.columns = check_int("columns", columns, minimum=1, maximum=4)
        rows = depth + 1
        chans = [base_channels * (i + 1) for i in range(rows)]
        in_channels = 1 if frames == "middle" else self.in_frames
        self.stem = nn.Sequential(*_conv_norm_relu(in_channels, chans[0], norm))
        # laterals[i][j] links column j to j+1 on row i; 2 * columns - 1 of them per row.
        self.laterals = nn.ModuleList(
            [
                nn.ModuleList([ResidualUnit(chans[i], norm) for _ in range(2 * columns - 1)])
                for i in range(rows)
            ]
        )
        self.downs = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        nn.Sequential(
                            *_conv_norm_relu(chans[i], chans[i + 1], norm, stride=2),
                            *_conv_norm_relu(chans[i + 1], chans[i + 1], norm),
                        )
                        for i in range(depth)
                    ]
                )
                for _ in range(columns)
            ]
        )
        self.ups = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        nn.Sequential(
                            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2),
                            norm_layer(norm, chans[i]),
                            nn.ReLU(inplace=True),
                            *_conv_norm_relu(chans[i], chans[i], norm),
                        )
                        for i in range(depth)
                    ]
                )
                for _ in range(columns)
            ]
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        # Registration: a translation (dy, dx) in normalised coordinates, zero-initialised (atlas unmoved).
        self.shift_head = nn.Linear(chans[-1], 2)
        nn.init.zeros_(self.shift_head.weight)
        nn.init.zeros_(self.shift_head.bias)
        self.prior_weight = nn.Parameter(torch.ones(1))
        prior_hw = self.input_size or (1, 1)
        self.prior: Tensor
        self.register_buffer("prior", torch.full((num_classes, *prior_hw), 1.0 / num_classes))

    @torch.no_grad()
    def set_prior(self, labels: Tensor, smoothing: float = 1.0) -> None:
        """Build the atlas from training label maps (N, H, W) with values in [0, num_classes).

        prior[c] = (count of label c at each pixel + smoothing) / (N + num_classes * smoothing), so no class
        has probability 0 anywhere. The atlas keeps the labels' size; it is resampled to each input.
        """
        if labels.dim() != 3 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise InputShapeError(
                f"set_prior expects integer labels of shape (N, H, W), got dtype {labels.dtype} shape {tuple(labels.shape)}"
            )
        if labels.numel() == 0:
            raise InputShapeError(f"set_prior needs at least one label map, got shape {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise InputShapeError(
                f"set_prior labels must lie in [0, {self.num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        if smoothing <= 0:
            raise InputShapeError(
                f"smoothing must be > 0 so that no class gets probability 0, got {smoothing}"
            )
        counts = F.one_hot(labels.long(), self.num_classes).sum(dim=0).permute(2, 0, 1).to(torch.float32)
        prior = (counts + smoothing) / (labels.shape[0] + self.num_classes * smoothing)
        self.prior = prior.to(self.prior.device)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The atlas takes the size of the labels it was built from: adopt the checkpoint's shape.
        saved = state_dict.get(prefix + "prior")
        if isinstance(saved, Tensor) and saved.shape != self.prior.shape:
            self.prior = torch.empty_like(saved, device=self.prior.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def registered_prior(self, coarse: Tensor, size: tuple[int, int]) -> Tensor:
        """Shift the atlas by the translation predicted from ``coarse`` features; returns (B, C, H, W)."""
        b = coarse.shape[0]
        shift = torch.tanh(self.shift_head(coarse.mean(dim=(2, 3))))  # (B, 2) as (dx, dy), in [-1, 1]
        theta = torch.zeros(b, 2, 3, device=coarse.device, dtype=coarse.dtype)
        theta[:, 0, 0] = 1
        theta[:, 1, 1] = 1
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, [b, self.num_classes, *size], align_corners=False)
        prior = self.prior.to(coarse.dtype).unsqueeze(0).expand(b, -1, -1, -1)
        return F.grid_sample(prior, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _forward(self, clip: Tensor) -> Tensor:
        x_in = self.middle_frame(clip) if self.frames == "middle" else clip
        rows = len(self.laterals)
        x: list[Tensor] = []
        for i in range(rows):  # first column: stem, then down the rows
            x.append(self.stem(x_in) if i == 0 else _cell(self.downs, 0, i - 1)(x[i - 1]))
        lateral = 0
        for j in range(1, self.columns):  # remaining downsampling columns
            for i in range(rows):
                out = _cell(self.laterals, i, lateral)(x[i])
                x[i] = out if i == 0 else out + _cell(self.downs, j, i - 1)(x[i - 1])
            lateral += 1
        coarse = x[-1]
        for j in range(self.columns):  # upsampling columns, from the coarsest row up
            for i in reversed(range(rows)):
                out = _cell(self.laterals, i, lateral)(x[i])
                x[i] = out if i == rows - 1 else out + _cell(self.ups, j, i)(x[i + 1])
            lateral += 1
        logits = self.head(x[0])
        prior = self.registered_prior(coarse, (clip.shape[2], clip.shape[3]))
        return logits + self.prior_weight * torch.log(prior.clamp_min(PRIOR_EPS))
