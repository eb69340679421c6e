"""Per-patient intensity normalisation."""

from __future__ import annotations

import numpy as np


def normalise(
    cine: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[np.ndarray, dict[str, float]]:
    """Clip a cine to its intensity percentiles, then z-score it with the clipped mean and std.

    Args:
        cine: (T, Z, Y, X) intensities of one patient (any scale; MRI has no absolute unit).
        percentiles: lower and upper percentile (0-100) used to clip outliers such as flow artefacts.

    Returns:
        The normalised float32 cine and the statistics applied (low, high, mean, std) so the same
        transform can be replayed at inference time.
    """
    low, high = (float(v) for v in np.percentile(cine, percentiles))
    clipped = np.clip(cine, low, high).astype(np.float32)
    mean = float(clipped.mean())
    std = float(clipped.std())
    std = std if std > 1e-6 else 1.0  # a constant image stays finite
    return (clipped - mean) / std, {"low": low, "high": high, "mean": mean, "std": std}


def apply_normalisation(cine: np.ndarray, stats: dict[str, float]) -> np.ndarray:
    """Replay :func:`normalise` with stored statistics."""
    clipped = np.clip(cine, stats["low"], stats["high"]).astype(np.float32)
    return (clipped - stats["mean"]) / stats["std"]
