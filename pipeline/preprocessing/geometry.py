"""In-plane geometry: the map from a slice's own grid to the network's square input, and back.

Two modes, both recorded in the checkpoint so inference replays training exactly:

- ``resize`` (the paper): every slice is resized to ``size x size``, whatever its field of view, so the
  heart's scale in pixels varies with the scanner's spacing and matrix.
- ``spacing`` (nnU-Net's way): every slice is resampled to ``spacing_mm`` per pixel, then centre-cropped or
  padded to ``size x size``, so anatomy keeps its millimetre scale (a 40 mm ventricle is always the same
  number of pixels).

Images use antialiased bilinear interpolation; label maps are resampled as one-hot channels and
re-argmaxed. Class scores go back through the exact inverse: un-crop/un-pad (the padded border is
background), then bilinear resampling to the slice's own (Y, X) grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.vocabulary import N_CLASSES

GEOMETRIES = ("resize", "spacing")


@dataclass(frozen=True)
class Geometry:
    """mode: "resize" or "spacing"; size: network input size (pixels); spacing_mm: target in-plane spacing
    of mode "spacing" (ignored by "resize")."""

    mode: Literal["resize", "spacing"] = "resize"
    size: int = 64
    spacing_mm: float = 1.5

    def __post_init__(self) -> None:
        if self.mode not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {list(GEOMETRIES)}, got {self.mode!r}")
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {self.spacing_mm}")

    def resampled_shape(
        self, shape: tuple[int, int], spacing_yx: tuple[float, float] | None
    ) -> tuple[int, int]:
        """(Y', X') after resampling and before cropping/padding (``size x size`` for mode resize)."""
        if self.mode == "resize":
            return self.size, self.size
        if spacing_yx is None:
            raise ValueError("geometry 'spacing' needs the in-plane spacing (y, x) in mm of the input")
        return tuple(
            max(1, round(n * float(s) / self.spacing_mm)) for n, s in zip(shape, spacing_yx, strict=True)
        )  # type: ignore[return-value]

    def _windows(self, resampled: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """Matching (network, resampled) index windows of the centred crop/pad."""
        net, src = [], []
        for n in resampled:
            if n >= self.size:
                start = (n - self.size) // 2
                net.append(slice(0, self.size))
                src.append(slice(start, start + self.size))
            else:
                start = (self.size - n) // 2
                net.append(slice(start, start + n))
                src.append(slice(0, n))
        return (net[0], net[1]), (src[0], src[1])

    def _place(self, resampled: torch.Tensor, fill: float) -> torch.Tensor:
        """(N, C, Y', X') -> (N, C, size, size), centre-cropped/padded with ``fill``."""
        if resampled.shape[-2:] == (self.size, self.size):
            return resampled
        out = resampled.new_full((*resampled.shape[:2], self.size, self.size), fill)
        (ny, nx), (sy, sx) = self._windows(tuple(resampled.shape[-2:]))
        out[..., ny, nx] = resampled[..., sy, sx]
        return out

    def images_to_network(self, images: np.ndarray, spacing_yx: tuple[float, float] | None = None,
                          fill: float | None = None) -> np.ndarray:  # fmt: skip
        """(N, Y, X) float -> (N, size, size) float32; ``fill`` pads (default: the images' minimum).

        The interpolation runs in float64: torch's float32 kernels take different SIMD paths on
        different CPUs (AVX2, AVX-512) whose last bits differ, which would make the stored frames (and
        DVC's hashes) machine-dependent; float64 differences vanish in the float32/float16 result.
        """
        t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64))[:, None]
        shape = self.resampled_shape(tuple(images.shape[-2:]), spacing_yx)
        if shape != tuple(images.shape[-2:]):
            t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
        pad = float(images.min()) if fill is None and images.size else float(fill or 0.0)
        return self._place(t, pad)[:, 0].numpy().astype(np.float32)

    def labels_to_network(
        self, labels: np.ndarray, spacing_yx: tuple[float, float] | None = None
    ) -> np.ndarray:
        """(N, Y, X) integer labels in 0..3 -> (N, size, size) uint8 (one-hot bilinear, argmax, pad 0)."""
        t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        onehot = F.one_hot(t, N_CLASSES).permute(0, 3, 1, 2).double()  # float64: see images_to_network
        shape = self.resampled_shape(tuple(labels.shape[-2:]), spacing_yx)
        if shape != tuple(labels.shape[-2:]):
            onehot = F.interpolate(onehot, size=shape, mode="bilinear", align_corners=False, antialias=True)
        return self._place(onehot.argmax(1, keepdim=True).to(torch.uint8), 0)[:, 0].numpy()

    def probabilities_back(self, probs: torch.Tensor, shape: tuple[int, int],
                           spacing_yx: tuple[float, float] | None = None) -> torch.Tensor:  # fmt: skip
        """(N, C, size, size) class probabilities -> (N, C, Y, X) on the slice's own grid.

        The inverse of :meth:`images_to_network`: the crop's lost border becomes background (class 0
        probability 1), the padding is dropped, then bilinear resampling to ``shape``.
        """
        resampled = self.resampled_shape(shape, spacing_yx)
        if resampled != (self.size, self.size):
            full = probs.new_zeros((*probs.shape[:2], *resampled))
            full[:, 0] = 1.0
            (ny, nx), (sy, sx) = self._windows(resampled)
            full[..., sy, sx] = probs[..., ny, nx]
            probs = full
        if tuple(probs.shape[-2:]) == tuple(shape):
            return probs
        return F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)
