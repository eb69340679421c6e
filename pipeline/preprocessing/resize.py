"""In-plane resizing of slices to the network's square input, and back to the original grid.

The paper resizes every slice to 256 x 256; we do the same with a size from params. Images use
antialiased bilinear interpolation; label maps are resized as one-hot channels and re-argmaxed, which
keeps thin structures (the myocardium) better than nearest-neighbour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.vocabulary import N_CLASSES


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, Y, X) float -> (N, size, size) float32."""
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0].numpy()


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(N, Y, X) integer labels in 0..3 -> (N, size, size) uint8, via one-hot bilinear and argmax."""
    t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    onehot = F.one_hot(t, N_CLASSES).permute(0, 3, 1, 2).float()
    out = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.argmax(1).to(torch.uint8).numpy()


def resize_probabilities_back(probs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(N, C, S, S) class scores -> (N, C, Y, X) on the original in-plane grid (bilinear)."""
    return F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)
