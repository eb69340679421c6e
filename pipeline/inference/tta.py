"""Test-time augmentation: the same slice seen mirrored and rotated, probabilities mapped back and averaged.

Each transform acts on the last two (H, W) axes of a clip (B, 2r+1, H, W) and its inverse on the class
probabilities (B, C, H, W), as numpy arrays (views: a network copies what it needs). Training augments
with the same mirrorings and 90-degree rotations, so the network has seen every view. Inputs are square
(the network's size x size), so rot90 keeps the shape.

    none      1 view
    flips     4 views: as is, mirrored left-right, up-down, both
    dihedral  8 views: the four rotations by 90 degrees, each as is and mirrored
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TTA_MODES = ("none", "flips", "dihedral")
Transform = Callable[[np.ndarray], np.ndarray]
AXES = (-2, -1)


def _flip(dims: tuple[int, ...]) -> Transform:
    return (lambda t: np.flip(t, dims)) if dims else (lambda t: t)


def _view(k: int, mirror: bool) -> tuple[Transform, Transform]:
    """(forward, inverse) of: mirror left-right (optional), then rotate by k * 90 degrees."""
    flip = _flip((-1,) if mirror else ())

    def forward(t: np.ndarray) -> np.ndarray:
        return np.rot90(flip(t), k, AXES)

    def inverse(t: np.ndarray) -> np.ndarray:
        return flip(np.rot90(t, -k, AXES))

    return forward, inverse


def tta_transforms(mode: str) -> list[tuple[Transform, Transform]]:
    """The (forward, inverse) pairs of ``mode``; the first is always the identity."""
    if mode == "none":
        return [_view(0, False)]
    if mode == "flips":
        return [(_flip(d), _flip(d)) for d in ((), (-1,), (-2,), (-2, -1))]
    if mode == "dihedral":
        return [_view(k, m) for m in (False, True) for k in range(4)]
    raise ValueError(f"tta must be one of {list(TTA_MODES)}, got {mode!r}")
