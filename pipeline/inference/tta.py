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
from typing import Any, TypeVar

import numpy as np

TTA_MODES = ("none", "flips", "dihedral")
A = TypeVar("A")
Transform = Callable[[Any], Any]
AXES = (-2, -1)


def views(mode: str, flip: Callable[[A, tuple[int, ...]], A],
          rot90: Callable[[A, int], A]) -> list[tuple[Callable[[A], A], Callable[[A], A]]]:  # fmt: skip
    """The (forward, inverse) pairs of ``mode`` for arrays of any library, given its ``flip(t, dims)`` and
    ``rot90(t, k)`` over :data:`AXES`; the first pair is always the identity. The numpy path
    (:func:`tta_transforms`) and the device path (pipeline.inference.resident) take the views in this
    order, so their sums match."""

    def flipped(dims: tuple[int, ...]) -> Callable[[A], A]:
        return (lambda t: flip(t, dims)) if dims else (lambda t: t)

    def view(k: int, mirror: bool) -> tuple[Callable[[A], A], Callable[[A], A]]:
        """Mirror left-right (optional), then rotate by k * 90 degrees; and back."""
        f = flipped((-1,) if mirror else ())
        if k == 0:
            return f, f
        return (lambda t: rot90(f(t), k)), (lambda t: f(rot90(t, -k)))

    if mode == "none":
        return [view(0, False)]
    if mode == "flips":
        return [(flipped(d), flipped(d)) for d in ((), (-1,), (-2,), (-2, -1))]
    if mode == "dihedral":
        return [view(k, m) for m in (False, True) for k in range(4)]
    raise ValueError(f"tta must be one of {list(TTA_MODES)}, got {mode!r}")


def tta_transforms(mode: str) -> list[tuple[Transform, Transform]]:
    """The (forward, inverse) numpy pairs of ``mode`` (views of the input: a network copies what it needs)."""
    return views(mode, lambda t, dims: np.flip(t, dims), lambda t, k: np.rot90(t, k, AXES))
