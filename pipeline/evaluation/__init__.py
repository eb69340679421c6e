"""Evaluation: segmentation metrics, clinical indices, agreement, quality control, figures and tables.

Pure functions on numpy arrays in the ACDC conventions (labels 0 bg, 1 RV, 2 MYO, 3 LV; volumes
(Z, Y, X), cines (T, Z, Y, X), spacing (z, y, x) mm). The evaluate stage composes them.
"""

from pipeline.evaluation.agreement import agreement
from pipeline.evaluation.clinical import (
    CLINICAL_KEYS,
    CLINICAL_UNITS,
    clinical_indices,
    phases_from_curves,
    structure_volumes,
    volume_curves,
)
from pipeline.evaluation.metrics import binary_metrics, evaluate_case, surface_distances
from pipeline.evaluation.report import summarise, table1_markdown

__all__ = [
    "CLINICAL_KEYS",
    "CLINICAL_UNITS",
    "agreement",
    "binary_metrics",
    "clinical_indices",
    "evaluate_case",
    "phases_from_curves",
    "structure_volumes",
    "summarise",
    "surface_distances",
    "table1_markdown",
    "volume_curves",
]
