"""Clip extraction: the 2r+1 frames of one slice around a target frame, wrapping around the cycle.

A cine covers one cardiac cycle, so the frame before the first is the last one.
"""

from __future__ import annotations

import numpy as np


def clip_frames(t0: int, n_frames: int, radius: int) -> np.ndarray:
    """0-based frame indices ``t0-r .. t0+r`` modulo ``n_frames`` (the target frame in the middle).

    >>> clip_frames(0, 10, 2).tolist()
    [8, 9, 0, 1, 2]
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if not 0 <= t0 < n_frames:
        raise ValueError(f"t0 must be in 0..{n_frames - 1}, got {t0}")
    return (np.arange(t0 - radius, t0 + radius + 1) % n_frames).astype(np.int64)


def narrow(clip_rows: np.ndarray, radius: int) -> np.ndarray:
    """Columns of a (N, 2R+1) clip table for a smaller radius ``r <= R`` (the middle 2r+1 columns)."""
    big = (clip_rows.shape[1] - 1) // 2
    if not 0 <= radius <= big:
        raise ValueError(
            f"radius {radius} exceeds the stored clip radius {big}; re-run preprocess with a larger max_radius"
        )
    return clip_rows[:, big - radius : big + radius + 1]
