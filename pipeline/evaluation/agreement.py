"""Agreement between predicted and reference clinical indices: Pearson r and Bland-Altman statistics."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

# The indices whose agreement the benchmarks report (keys of pipeline.clinical.indices.clinical_indices).
AGREEMENT_KEYS = ("LV_EF", "RV_EF", "LV_EDV", "RV_EDV", "MYO_mass")


def agreement(pred: ArrayLike, ref: ArrayLike) -> dict[str, float | int]:
    """Pearson correlation, bias and 95% limits of agreement of ``pred`` against ``ref``.

    Pairs where either value is NaN (or infinite) are dropped first and counted.

    Args:
        pred, ref: (N,) values of one index in the same unit (e.g. LV EDV in ml), paired by patient.

    Returns:
        ``{"n", "n_dropped", "pearson_r", "bias", "sd", "loa_low", "loa_high"}`` where the difference is
        ``pred - ref`` (same unit as the inputs), ``bias`` its mean, ``sd`` its sample standard deviation
        (ddof=1) and the limits ``bias -/+ 1.96 sd``. ``sd`` and the limits are NaN for n < 2; ``bias`` is
        NaN for n = 0; ``pearson_r`` is NaN for n < 2 or when either side has zero variance.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same length, got {p.size} and {r.size}")
    keep = np.isfinite(p) & np.isfinite(r)
    p, r = p[keep], r[keep]
    n = int(p.size)
    diff = p - r
    bias = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n >= 2 else math.nan
    pearson = math.nan
    if n >= 2 and p.std() > 0 and r.std() > 0:
        pearson = float(np.corrcoef(p, r)[0, 1])
    return {
        "n": n,
        "n_dropped": int(keep.size - n),
        "pearson_r": pearson,
        "bias": bias,
        "sd": sd,
        "loa_low": bias - 1.96 * sd,
        "loa_high": bias + 1.96 * sd,
    }


def agreement_summary(pred: ArrayLike, ref: ArrayLike) -> dict[str, float | int | list[float]]:
    """The short read-out benchmarks print: mean absolute error, bias, limits of agreement, r and n.

    Same inputs as :func:`agreement`; values rounded (2 decimals, r to 3)."""
    stats = agreement(pred, ref)
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    ok = np.isfinite(p) & np.isfinite(r)
    mae = float(np.abs(p - r)[ok].mean()) if ok.any() else math.nan
    return {"mae": round(mae, 2), "bias": round(float(stats["bias"]), 2),
            "loa": [round(float(stats["loa_low"]), 2), round(float(stats["loa_high"]), 2)],
            "r": round(float(stats["pearson_r"]), 3), "n": stats["n"]}  # fmt: skip
