"""The label and geometry vocabulary of the pipeline, defined once (ACDC's conventions).

Labels 0 background, 1 RV, 2 MYO, 3 LV; the phases with expert labels are ED and ES; tables list the
structures as the paper does (LV, MYO, RV). Voxel volumes come from the (z, y, x) spacing in mm. This
module imports nothing heavy, so models, losses and readers can all use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LABELS = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
#: Structure name -> label value.
STRUCTURES = {"RV": 1, "MYO": 2, "LV": 3}
#: Number of classes, background included.
N_CLASSES = len(LABELS)
#: The labelled phases, in Info.cfg's order.
PHASES = ("ED", "ES")
#: The paper's Table 1 order of the structures (metrics, reports).
STRUCTURE_ORDER = ("LV", "MYO", "RV")
#: The two ventricles: ejection fractions, volume-curve plots.
VENTRICLES = ("LV", "RV")
#: Order of the volume curves (LV, RV, MYO): clinical.volume_curves, the volumes CSV of predict.
CURVE_ORDER = (*VENTRICLES, "MYO")
#: Label values of the structures (no background): what the Dice loss averages over.
STRUCTURE_LABELS = tuple(STRUCTURES.values())


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml from its (z, y, x) size in mm."""
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive finite (z, y, x) values in mm, got {spacing!r}")
    return math.prod(values) / 1000.0
