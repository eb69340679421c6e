"""Post-processing of predicted label volumes: one function, used by evaluate, predict and serving.

Modes (``postprocess`` in params, ``--postprocess`` of predict):
    raw       the network's argmax as it is
    lcc       the largest 3D connected component of each structure; smaller pieces become background
    lcc_fill  lcc, then holes of each structure filled slice by slice (LV first, then RV, then MYO), so a
              blood pool with a speck of background inside is whole again
Stray components far from the heart are what make Hausdorff distances large; ``lcc`` removes them.
"""

from __future__ import annotations

import numpy as np

from pipeline.vocabulary import STRUCTURES

POSTPROCESS_MODES = ("raw", "lcc", "lcc_fill")
#: Order in which holes are filled: a background hole inside the LV cavity becomes LV before MYO can take it.
FILL_ORDER = ("LV", "RV", "MYO")


def largest_component(labels: np.ndarray, connectivity: int = 3) -> np.ndarray:
    """Keep only the largest 3D connected component of each structure (1 RV, 2 MYO, 3 LV).

    Voxels of smaller components become background (0). Ties keep the component found first in C order.

    Args:
        labels: (Z, Y, X) integer label volume.
        connectivity: neighbourhood of :func:`scipy.ndimage.generate_binary_structure` in 3D: 1 = faces
            (6 neighbours), 2 = faces and edges (18), 3 = full (26, the default: a piece touching the
            main body even at a corner is kept).

    Returns:
        A new (Z, Y, X) array of the input's dtype; the input is not modified.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D (Z, Y, X) volume, got shape {labels.shape}")
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
    from scipy import ndimage  # here, not at import: see pipeline.evaluation.metrics' _CROSS

    structure = ndimage.generate_binary_structure(3, connectivity)
    out = labels.copy()
    for value in STRUCTURES.values():
        mask = labels == value
        components, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[mask & (components != int(np.argmax(sizes)))] = 0
    return out


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes of each structure, slice by slice, in :data:`FILL_ORDER`.

    Only background voxels (0) change: one enclosed by structure s in its slice becomes s. Other structures'
    voxels are never overwritten, so the LV cavity inside the myocardial ring stays LV.

    Args:
        labels: (Z, Y, X) integer label volume.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D (Z, Y, X) volume, got shape {labels.shape}")
    from scipy import ndimage

    out = labels.copy()
    for name in FILL_ORDER:
        value = STRUCTURES[name]
        for z in range(out.shape[0]):
            mask = out[z] == value
            if mask.any():
                holes = ndimage.binary_fill_holes(mask) & (out[z] == 0)
                out[z][holes] = value
    return out


def postprocess(labels: np.ndarray, mode: str) -> np.ndarray:
    """Apply post-processing ``mode`` (see :data:`POSTPROCESS_MODES`) to a (Z, Y, X) label volume."""
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"postprocess must be one of {list(POSTPROCESS_MODES)}, got {mode!r}")
    if mode == "raw":
        return np.asarray(labels)
    out = largest_component(labels)
    return fill_holes(out) if mode == "lcc_fill" else out
