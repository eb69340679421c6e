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

Both interpolations are separable: each output pixel is a weighted sum of a few input pixels along the
rows, then along the columns, in numpy, with the same weights as torch's ``F.interpolate(mode="bilinear",
align_corners=False)`` with and without ``antialias`` (tests/preprocessing/test_geometry.py checks them
against torch). No torch import, so a torch-free predict (ONNX Runtime) maps images exactly as training
did.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from pipeline.vocabulary import N_CLASSES

GEOMETRIES = ("resize", "spacing")


@lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """1D bilinear resampling, align_corners=False, as torch computes it: (n_out, width) input indices and
    weights of each output pixel (zero weights pad the shorter rows).

    antialias (torch's ``_upsample_bilinear2d_aa``): output pixel i is centred at ``scale * (i + 0.5)`` in
    input pixels (``scale = n_in / n_out``), the triangle filter is widened to ``max(scale, 1)`` pixels
    when shrinking, and each row is normalised over the input pixels it covers. Without (torch's
    ``upsample_bilinear2d``): the two neighbours of ``scale * (i + 0.5) - 0.5``, clamped at 0 and at
    ``n_in - 1`` (where both are the same pixel).
    """
    scale = n_in / n_out
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n_out):
        if antialias:
            support = scale if scale >= 1.0 else 1.0
            inv = 1.0 / scale if scale >= 1.0 else 1.0
            centre = scale * (i + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), n_in)
            distance = np.abs((np.arange(lo, hi) - centre + 0.5) * inv)
            w = np.where(distance < 1.0, 1.0 - distance, 0.0)
            rows.append((np.arange(lo, hi), w / w.sum() if w.sum() != 0 else w))
        else:
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            i0 = int(src)
            frac = src - i0
            rows.append((np.array([i0, i0 + (1 if i0 < n_in - 1 else 0)]), np.array([1.0 - frac, frac])))
    width = max(len(ix) for ix, _ in rows)
    index, weight = np.zeros((n_out, width), np.intp), np.zeros((n_out, width), np.float64)
    for i, (ix, w) in enumerate(rows):
        index[i, : len(ix)], weight[i, : len(ix)] = ix, w
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


def _rows(array: np.ndarray, n_out: int, antialias: bool) -> np.ndarray:
    """Resample the second-to-last axis of ``array`` (..., Y, X) to ``n_out``, in its dtype."""
    index, weight = _taps(array.shape[-2], n_out, antialias)
    w = weight.astype(array.dtype, copy=False)
    out = np.take(array, index[:, 0], axis=-2)
    out *= w[:, 0, None]
    for j in range(1, index.shape[1]):
        tap = np.take(array, index[:, j], axis=-2)
        tap *= w[:, j, None]
        out += tap
    return out


def resample(array: np.ndarray, shape: tuple[int, int], antialias: bool) -> np.ndarray:
    """(..., Y, X) -> (..., Y', X') bilinear resampling (see :func:`_taps`), in ``array``'s float dtype.

    A weighted sum of the few input pixels each output pixel reads, along the rows, then along the rows
    of the transposed result (numpy gathers whole rows much faster than single elements), rather than a
    matrix product: numpy's BLAS would start its own threads, which fought the network's for the two
    cores (an in-process predict 1.2 -> 1.6-1.9 s with them; docs/experiments.md, "A torch-free predict").
    """
    y, x = array.shape[-2:]
    if (y, x) == tuple(shape):
        return array
    rows = np.ascontiguousarray(_rows(array, shape[0], antialias).swapaxes(-1, -2))
    return np.ascontiguousarray(_rows(rows, shape[1], antialias).swapaxes(-1, -2))


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

    def _place(self, resampled: np.ndarray, fill: float) -> np.ndarray:
        """(..., Y', X') -> (..., size, size), centre-cropped/padded with ``fill``."""
        if resampled.shape[-2:] == (self.size, self.size):
            return resampled
        out = np.full((*resampled.shape[:-2], self.size, self.size), fill, resampled.dtype)
        (ny, nx), (sy, sx) = self._windows(tuple(resampled.shape[-2:]))
        out[..., ny, nx] = resampled[..., sy, sx]
        return out

    def images_to_network(self, images: np.ndarray, spacing_yx: tuple[float, float] | None = None,
                          fill: float | None = None) -> np.ndarray:  # fmt: skip
        """(N, Y, X) float -> (N, size, size) float32; ``fill`` pads (default: the images' minimum).

        The interpolation runs in float64: float32 kernels take different SIMD paths on different CPUs
        (AVX2, AVX-512) whose last bits differ, which would make the stored frames (and DVC's hashes)
        machine-dependent; float64 differences vanish in the float32/float16 result.
        """
        images = np.asarray(images, dtype=np.float64)
        shape = self.resampled_shape(tuple(images.shape[-2:]), spacing_yx)
        pad = float(images.min()) if fill is None and images.size else float(fill or 0.0)
        return self._place(resample(images, shape, antialias=True), pad).astype(np.float32)

    def labels_to_network(
        self, labels: np.ndarray, spacing_yx: tuple[float, float] | None = None
    ) -> np.ndarray:
        """(N, Y, X) integer labels in 0..3 -> (N, size, size) uint8 (one-hot bilinear, argmax, pad 0)."""
        labels = np.asarray(labels)
        # float64: see images_to_network; (N, C, Y, X)
        onehot = (labels[:, None] == np.arange(N_CLASSES).reshape(1, -1, 1, 1)).astype(np.float64)
        shape = self.resampled_shape(tuple(labels.shape[-2:]), spacing_yx)
        return self._place(resample(onehot, shape, antialias=True).argmax(1).astype(np.uint8), 0)

    def probabilities_back(self, probs: np.ndarray, shape: tuple[int, int],
                           spacing_yx: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
        """(N, C, size, size) class probabilities -> (N, C, Y, X) on the slice's own grid, same dtype.

        The inverse of :meth:`images_to_network`: the crop's lost border becomes background (class 0
        probability 1), the padding is dropped, then bilinear resampling to ``shape``.
        """
        resampled = self.resampled_shape(shape, spacing_yx)
        if resampled != (self.size, self.size):
            full = np.zeros((*probs.shape[:2], *resampled), probs.dtype)
            full[:, 0] = 1.0
            (ny, nx), (sy, sx) = self._windows(resampled)
            full[..., sy, sx] = probs[..., ny, nx]
            probs = full
        return resample(probs, shape, antialias=False)
