"""Clinical indices from label volumes: ventricular volumes (ml), ejection fractions (%), myocardial mass (g).

Volumes count voxels of a label and multiply by the voxel volume ``prod(spacing) / 1000`` ml (spacing in
mm). Myocardial mass is the MYO volume at ED times 1.05 g/ml. EF = 100 * (EDV - ESV) / EDV; when EDV is 0
the EF is NaN and its status says so (``"edv_zero"``) instead of raising ZeroDivisionError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.vocabulary import CURVE_ORDER, STRUCTURES, VENTRICLES, voxel_volume_ml

MYOCARDIAL_DENSITY_G_PER_ML = 1.05

#: The numeric keys of :func:`clinical_indices` and their units.
CLINICAL_UNITS = {
    "LV_EDV": "ml",
    "LV_ESV": "ml",
    "LV_EF": "%",
    "RV_EDV": "ml",
    "RV_ESV": "ml",
    "RV_EF": "%",
    "MYO_mass": "g",
}
CLINICAL_KEYS = tuple(CLINICAL_UNITS)


def structure_volumes(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in ml of LV, MYO and RV in one (Z, Y, X) label volume with (z, y, x) spacing in mm."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D (Z, Y, X) volume, got shape {labels.shape}")
    voxel = voxel_volume_ml(spacing)
    counts = np.bincount(labels.ravel().astype(np.intp), minlength=4)
    return {name: float(counts[value]) * voxel for name, value in STRUCTURES.items()}


def volume_curves(cine_labels: np.ndarray, spacing: Sequence[float]) -> dict[str, np.ndarray]:
    """Volume of each structure in every frame of a labelled cine.

    Args:
        cine_labels: (T, Z, Y, X) integer labels (0 bg, 1 RV, 2 MYO, 3 LV).
        spacing: (z, y, x) voxel size in mm.

    Returns:
        ``{"LV": (T,), "RV": (T,), "MYO": (T,)}`` float64 volumes in ml.
    """
    cine_labels = np.asarray(cine_labels)
    if cine_labels.ndim != 4:
        raise ValueError(f"cine_labels must be 4D (T, Z, Y, X), got shape {cine_labels.shape}")
    voxel = voxel_volume_ml(spacing)
    flat = cine_labels.reshape(cine_labels.shape[0], -1)
    return {
        name: np.count_nonzero(flat == STRUCTURES[name], axis=1).astype(np.float64) * voxel
        for name in CURVE_ORDER
    }


#: How :func:`phases_from_curves` picks ED and ES (``score`` of benchmarks/phase_detection.py compares them).
PHASE_RULES = ("cycle", "cycle_lv_rv", "lv_extrema")
#: "cycle": the first frame is ED when its smoothed volume is within this fraction of the curve's maximum.
ED_FIRST_TOLERANCE = 0.10


def _smooth_cycle(curve: np.ndarray) -> np.ndarray:
    """(T,) curve around the cycle (its last frame neighbours its first): the median of each frame and its
    two neighbours (a one-frame dropout or spike of the segmentation is gone), then [1, 2, 1] / 4."""
    if curve.size < 3:
        return curve
    median = np.median(np.stack([np.roll(curve, 1), curve, np.roll(curve, -1)]), axis=0)
    return (np.roll(median, 1) + 2 * median + np.roll(median, -1)) / 4


def cycle_distance(a: int, b: int, n_frames: int) -> int:
    """Frames between frames ``a`` and ``b`` of a cine of ``n_frames`` covering one cycle, measured around
    the cycle (its last frame neighbours its first, as the clips wrap)."""
    d = abs(int(a) - int(b)) % n_frames
    return min(d, n_frames - d)


def phases_from_curves(curves: Mapping[str, np.ndarray], rule: str = "cycle") -> tuple[int, int]:
    """ED and ES frames picked from the volume curves of one cardiac cycle.

    Rules (:data:`PHASE_RULES`):

    - ``cycle`` (the default): the LV curve smoothed around the cycle (:func:`_smooth_cycle`: one frame's
      segmentation error no longer moves the extremes); ES is its minimum; ED is the first frame, where a
      cine starts (the R wave: ACDC, and scanners' cines ordered by trigger time, start at ED), unless the
      curve's maximum is more than :data:`ED_FIRST_TOLERANCE` above that frame's volume, and then the
      maximum.
    - ``cycle_lv_rv``: the same on LV + RV (RV ignored when absent). On cross-validated acdc-roi curves the
      RV's noisier segmentation moved ES away more often than it helped (docs/experiments.md, "ED and ES").
    - ``lv_extrema``: the raw LV curve's maximum and minimum (the rule before; ties: the first).

    Args:
        curves: as returned by :func:`volume_curves`, (T,) ml each; ``"LV"`` is required.

    Returns:
        ``(ed_index, es_index)``, 0-based frame indices.

    Raises:
        ValueError: an unknown rule; the LV curve is missing, empty, not finite, or zero in every frame (no
            LV anywhere, so ED and ES are undefined).
    """
    if rule not in PHASE_RULES:
        raise ValueError(f"rule must be one of {list(PHASE_RULES)}, got {rule!r}")
    if "LV" not in curves:
        raise ValueError(f"curves must contain 'LV', got keys {sorted(curves)}")
    lv = np.asarray(curves["LV"], dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0:
        raise ValueError(f"curves['LV'] must be a non-empty (T,) array, got shape {lv.shape}")
    if not np.isfinite(lv).all():
        raise ValueError("curves['LV'] contains NaN or infinite volumes")
    if not lv.any():
        raise ValueError("curves['LV'] is zero in every frame: no LV, so ED and ES are undefined")
    if rule == "lv_extrema":
        return int(np.argmax(lv)), int(np.argmin(lv))
    volume = lv
    if rule == "cycle_lv_rv" and "RV" in curves:
        rv = np.asarray(curves["RV"], dtype=np.float64)
        if rv.shape == lv.shape and np.isfinite(rv).all():
            volume = lv + rv
    smooth = _smooth_cycle(volume)
    peak = float(smooth.max())
    ed = 0 if smooth[0] >= (1.0 - ED_FIRST_TOLERANCE) * peak else int(np.argmax(smooth))
    return ed, int(np.argmin(smooth))


def ejection_fraction(edv: float, esv: float) -> tuple[float, str]:
    """EF in % and a status: ``("ok")`` or NaN with ``"edv_zero"`` when EDV (ml) is 0."""
    if edv <= 0:
        return math.nan, "edv_zero"
    return 100.0 * (edv - esv) / edv, "ok"


def clinical_indices(ed_labels: np.ndarray, es_labels: np.ndarray, spacing: Sequence[float]) -> dict:
    """LV/RV EDV, ESV (ml), EF (%) and myocardial mass (g) from the ED and ES label volumes.

    Args:
        ed_labels, es_labels: (Z, Y, X) integer labels at end-diastole and end-systole.
        spacing: (z, y, x) voxel size in mm.

    Returns:
        The numeric keys of :data:`CLINICAL_KEYS` (floats; EF NaN when EDV is 0) plus ``"LV_EF_status"``
        and ``"RV_EF_status"`` (``"ok"`` or ``"edv_zero"``).
    """
    ed = structure_volumes(ed_labels, spacing)
    es = structure_volumes(es_labels, spacing)
    out: dict[str, float | str] = {}
    for side in VENTRICLES:
        ef, status = ejection_fraction(ed[side], es[side])
        out[f"{side}_EDV"] = ed[side]
        out[f"{side}_ESV"] = es[side]
        out[f"{side}_EF"] = ef
        out[f"{side}_EF_status"] = status
    out["MYO_mass"] = ed["MYO"] * MYOCARDIAL_DENSITY_G_PER_ML
    return out
