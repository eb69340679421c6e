"""Evaluation: segmentation metrics, agreement, Table 1, figures, and the evaluate stage's runner.

Pure functions on numpy arrays in the ACDC conventions (labels 0 bg, 1 RV, 2 MYO, 3 LV; volumes
(Z, Y, X), cines (T, Z, Y, X), spacing (z, y, x) mm). The evaluate stage composes them; the clinical
indices and quality control it scores are :mod:`pipeline.clinical`'s.
"""

from pipeline.evaluation.agreement import agreement
from pipeline.evaluation.metrics import binary_metrics, evaluate_case, surface_distances
from pipeline.evaluation.report import summarise, table1_markdown

__all__ = [
    "agreement",
    "binary_metrics",
    "evaluate_case",
    "summarise",
    "surface_distances",
    "table1_markdown",
]
