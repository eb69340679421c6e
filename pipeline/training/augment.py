"""Replayable augmentation: sample parameters from a seeded generator, then apply a deterministic transform.

The paper augments by mirroring, flipping and rotation. The same geometric transform is applied to every
frame of the clip and to the labels, so clip and labels stay aligned. Parameters are drawn from a
generator seeded by (seed, epoch, sample index), so any batch of any epoch can be replayed exactly, and a
resumed training sees the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """mirror / flip: probability of a left-right / up-down flip; rotate90: random multiples of 90 degrees;
    rotate_deg: maximum extra rotation in degrees (0 disables); intensity: max relative gain/offset jitter;
    scale: random zoom by a factor in [1 / (1 + scale), 1 + scale], log-uniform (0 disables; nnU-Net uses
    about 0.4), so the network sees hearts at other pixel sizes than the training set's; crop: train on a
    random crop x crop window of each (transformed) sample instead of the whole size x size image (0 = off;
    a multiple of the network's input multiple). Fully convolutional networks then segment whole images at
    inference; a smaller window costs proportionally less per step, like nnU-Net's patch training."""

    mirror: float = 0.5
    flip: float = 0.5
    rotate90: bool = True
    rotate_deg: float = 15.0
    intensity: float = 0.1
    scale: float = 0.4
    crop: int = 0

    def __post_init__(self) -> None:
        for name in ("mirror", "flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ValueError(f"rotate_deg must be in [0, 180], got {self.rotate_deg}")
        if not 0.0 <= self.scale <= 1.0:
            raise ValueError(f"scale must be in [0, 1], got {self.scale}")
        if not 0.0 <= self.intensity < 1.0:
            raise ValueError(f"intensity must be in [0, 1), got {self.intensity}")
        if self.crop < 0:
            raise ValueError(f"crop must be 0 (off) or a window size in pixels, got {self.crop}")


@dataclass(frozen=True)
class AugmentParams:
    mirror: bool
    flip: bool
    k90: int
    angle_deg: float
    gain: float
    offset: float
    zoom: float = 1.0
    crop_at: tuple[float, float] = (0.5, 0.5)  # the window's (y, x) start as a fraction of the free range


def sample_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw one sample's transform parameters."""
    return AugmentParams(
        mirror=bool(rng.random() < cfg.mirror),
        flip=bool(rng.random() < cfg.flip),
        k90=int(rng.integers(4)) if cfg.rotate90 else 0,
        angle_deg=float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg else 0.0,
        gain=float(rng.uniform(1 - cfg.intensity, 1 + cfg.intensity)),
        offset=float(rng.uniform(-cfg.intensity, cfg.intensity)),
        # drawn last and only when enabled, so scale: 0 replays the transforms of earlier versions exactly
        zoom=float(math.exp(rng.uniform(-math.log1p(cfg.scale), math.log1p(cfg.scale))))
        if cfg.scale
        else 1.0,
        # drawn after zoom and only when enabled, for the same reason
        crop_at=(float(rng.random()), float(rng.random())) if cfg.crop else (0.5, 0.5),
    )


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample in one epoch (independent of batch composition and worker count)."""
    return np.random.default_rng([seed, epoch, index])


def apply(clip: torch.Tensor, label: torch.Tensor, p: AugmentParams,
          crop: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Apply ``p`` to a clip (F, H, W) float and its labels (H, W) long; returns new tensors.

    With ``crop`` > 0, the result is the (F, crop, crop) window at ``p.crop_at`` (clipped to the image).
    """
    if p.mirror:
        clip, label = clip.flip(-1), label.flip(-1)
    if p.flip:
        clip, label = clip.flip(-2), label.flip(-2)
    if p.k90:
        clip, label = torch.rot90(clip, p.k90, (-2, -1)), torch.rot90(label, p.k90, (-2, -1))
    if p.angle_deg or p.zoom != 1.0:
        a, z = math.radians(p.angle_deg), p.zoom  # z > 1 magnifies: the grid samples a smaller window
        theta = torch.tensor(
            [[math.cos(a) / z, -math.sin(a) / z, 0.0], [math.sin(a) / z, math.cos(a) / z, 0.0]],
            dtype=clip.dtype,
        )
        grid = F.affine_grid(theta[None], [1, 1, *clip.shape[-2:]], align_corners=False)
        background = clip.amin(dim=(-2, -1), keepdim=True)  # fill corners with each frame's minimum
        clip = (
            F.grid_sample((clip - background)[None], grid, mode="bilinear", align_corners=False)[0]
            + background
        )
        label = F.grid_sample(label[None, None].to(clip.dtype), grid, mode="nearest", align_corners=False)[
            0, 0
        ].long()
    clip = clip * p.gain + p.offset
    if crop:
        (h, w), (fy, fx) = clip.shape[-2:], p.crop_at
        y0, x0 = int(fy * (max(h - crop, 0) + 1)), int(fx * (max(w - crop, 0) + 1))
        clip, label = clip[..., y0 : y0 + crop, x0 : x0 + crop], label[..., y0 : y0 + crop, x0 : x0 + crop]
    return clip.contiguous(), label.contiguous()
