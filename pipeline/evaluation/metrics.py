"""Overlap and surface-distance metrics per structure, in 3D, with the voxel spacing in mm (ACDC convention).

Conventions, written once here (and matched by ``medpy.metric.binary`` with ``connectivity=1``, which the
tests cross-check):

- A structure's **surface** is its boundary voxels: ``mask XOR binary_erosion(mask, cross)`` where the
  cross is the 3D 6-neighbourhood (``generate_binary_structure(3, 1)``) and voxels outside the array count
  as background (so a mask touching the volume's edge has a surface there).
- **Directed surface distances** A -> B: for each surface voxel of A, the Euclidean distance in mm to the
  nearest surface voxel of B (``distance_transform_edt`` with ``sampling=spacing``).
- **HD** = max of both directed sets; **HD95** = 95th percentile (numpy's linear interpolation) of the
  union of both directed sets; **ASSD** = mean of the union of both directed sets.
- Edge cases, returned explicitly with a ``status``:
    both masks empty -> Dice 1.0, distances 0.0, status ``"both_empty"``;
    only the prediction empty -> Dice 0.0, distances NaN, status ``"pred_empty"``;
    only the ground truth empty -> Dice 0.0, distances NaN, status ``"gt_empty"``;
    otherwise status ``"ok"``. Callers count the statuses (see :mod:`pipeline.evaluation.report`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.vocabulary import STRUCTURE_ORDER, STRUCTURES

__all__ = ["METRICS", "STATUSES", "STRUCTURE_ORDER", "binary_metrics", "evaluate_case", "surface_distances"]
METRICS = ("dice", "hd", "hd95", "assd")
STATUSES = ("ok", "both_empty", "pred_empty", "gt_empty")

#: The 6-neighbourhood in 3D (scipy's generate_binary_structure(3, 1)), built without importing scipy:
#: scipy.ndimage loads only when a metric is computed, so ``deunet predict`` does not import it at start.
_CROSS = np.abs(np.indices((3, 3, 3)) - 1).sum(axis=0) <= 1


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive finite (z, y, x) values in mm, got {spacing!r}")
    return values[0], values[1], values[2]


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 3 or gt.ndim != 3:
        raise ValueError(f"pred and gt must be 3D (Z, Y, X), got shapes {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")


def _crop_to_union(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus ``margin`` voxels (clipped to the array).

    Exact, not an approximation: a margin of 1 keeps the erosion's boundary the same as on the full array
    (a voxel on the crop's edge is either on the array's edge or has background beyond it), and every
    surface voxel lies inside the box, so nearest-surface distances are unchanged.
    """
    union = a | b
    box = []
    for axis, n in enumerate(union.shape):
        hits = np.flatnonzero(union.any(axis=tuple(i for i in range(union.ndim) if i != axis)))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, n)))
    return a[tuple(box)], b[tuple(box)]


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask ^ ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def surface_distances(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) between two non-empty boolean masks.

    Args:
        pred_mask, gt_mask: (Z, Y, X) boolean masks, both with at least one voxel.
        spacing: (z, y, x) voxel size in mm.

    Returns:
        ``(pred_to_gt, gt_to_pred)``: 1D float64 arrays with one distance (mm) per surface voxel of the
        first mask (to the nearest surface voxel of the second), and the other way round.
    """
    sampling = _check_spacing(spacing)
    a, b = np.asarray(pred_mask, dtype=bool), np.asarray(gt_mask, dtype=bool)
    _check_pair(a, b)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks (use binary_metrics for empty ones)")
    a, b = _crop_to_union(a, b)
    surf_a, surf_b = _surface(a), _surface(b)
    from scipy import ndimage

    to_b = ndimage.distance_transform_edt(~surf_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surf_a, sampling=sampling)
    return np.asarray(to_b[surf_a], np.float64), np.asarray(to_a[surf_b], np.float64)


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Dice overlap 2|A & B| / (|A| + |B|) of two (Z, Y, X) boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(pred_mask, dtype=bool), np.asarray(gt_mask, dtype=bool)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def binary_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float]) -> dict:
    """Dice, HD, HD95 and ASSD of one structure, with the edge cases of the module docstring.

    Args:
        pred_mask, gt_mask: (Z, Y, X) boolean masks of the same shape.
        spacing: (z, y, x) voxel size in mm.

    Returns:
        ``{"dice": float, "hd": mm, "hd95": mm, "assd": mm, "status": str}``; distances are NaN when
        exactly one mask is empty and 0.0 when both are.
    """
    _check_spacing(spacing)
    a, b = np.asarray(pred_mask, dtype=bool), np.asarray(gt_mask, dtype=bool)
    _check_pair(a, b)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "status": "both_empty"}
    if not has_a or not has_b:
        status = "pred_empty" if not has_a else "gt_empty"
        return {"dice": 0.0, "hd": math.nan, "hd95": math.nan, "assd": math.nan, "status": status}
    d_ab, d_ba = surface_distances(a, b, spacing)
    both = np.concatenate([d_ab, d_ba])
    return {
        "dice": dice(a, b),
        "hd": float(both.max()),
        "hd95": float(np.percentile(both, 95)),
        "assd": float(both.mean()),
        "status": "ok",
    }


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, dict]:
    """Metrics of every structure of one volume (one patient, one phase), 3D at the given resolution.

    Args:
        pred, gt: (Z, Y, X) integer label volumes (0 background, 1 RV, 2 MYO, 3 LV), same shape.
        spacing: (z, y, x) voxel size in mm, from the image header.

    Returns:
        ``{"LV": m, "MYO": m, "RV": m}`` with each ``m`` as returned by :func:`binary_metrics`.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt)
    for name, arr in (("pred", pred), ("gt", gt)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return {s: binary_metrics(pred == STRUCTURES[s], gt == STRUCTURES[s], spacing) for s in STRUCTURE_ORDER}
