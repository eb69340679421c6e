"""The image every reader returns (NIfTI in pipeline.data.imageio, DICOM in pipeline.data.dicom)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Image:
    """An image in the memory convention: ``array`` (T, Z, Y, X) or (Z, Y, X), ``spacing`` (z, y, x) mm,
    ``affine`` the 4x4 voxel-to-world matrix of the file (NIfTI voxel order)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
