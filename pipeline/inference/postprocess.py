"""Post-processing of predicted label volumes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.data.acdc import STRUCTURES


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
