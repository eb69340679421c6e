"""The clinical read-out of a segmented cine: volume curves, ED/ES frames and the ACDC indices.

Shared by the HTTP model and the local CLI so both answer the same numbers for the same labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pipeline.clinical.indices import CLINICAL_KEYS, clinical_indices, phases_from_curves, volume_curves
from pipeline.clinical.quality_control import phase_consistency

if TYPE_CHECKING:
    from pipeline.inference.predict import Segmenter


@dataclass(frozen=True)
class Readout:
    """Clinical read-out of one labelled cine.

    Attributes:
        curves: ``{"LV", "RV", "MYO"}`` -> (T,) volumes in ml.
        ed_frame, es_frame: 0-based ED and ES frames from the volume curves (0 when undefined):
            :func:`~pipeline.clinical.indices.phases_from_curves`' default rule, the first frame as ED
            unless the smoothed LV volume peaks more than 10 % above it, ES at its minimum (DICOM
            frames are ordered by TriggerTime, so the first is the R wave's).
        indices: LV/RV EDV, ESV (ml), EF (%) and MYO_mass (g); NaN where undefined.
        status: ``"ok"``, ``"single_frame"`` (3D input: no cycle, so no ED/ES) or ``"no_lv"``
            (no LV voxel in any frame).
        consistency: ``{"ED": ..., "ES": ...}`` the model's estimate of its own Dice on those frames (and
            ``"ED_basal"``, ``"ES_basal"``: on their basal slice alone)
            (pipeline.clinical.quality_control.estimated_dice, from the probabilities averaged over TTA
            views and ensemble members); empty when the probabilities were not at hand (labels read from
            a file).
    """

    curves: dict[str, np.ndarray]
    ed_frame: int
    es_frame: int
    indices: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    consistency: dict[str, float] = field(default_factory=dict)


def readout(labels: np.ndarray, spacing: Sequence[float]) -> Readout:
    """Read out a ``(T, Z, Y, X)`` label cine (0 bg, 1 RV, 2 MYO, 3 LV) with ``(z, y, x)`` spacing in mm."""
    curves = volume_curves(labels, spacing)
    nan = dict.fromkeys(CLINICAL_KEYS, math.nan)
    if labels.shape[0] < 2:
        return Readout(curves, 0, 0, nan, "single_frame")
    try:
        ed, es = phases_from_curves(curves)
    except ValueError:
        return Readout(curves, 0, 0, nan, "no_lv")
    raw = clinical_indices(labels[ed], labels[es], spacing)
    return Readout(curves, ed, es, {k: float(raw[k]) for k in CLINICAL_KEYS}, "ok")


def segmented_readout(segmenter: Segmenter, cine: np.ndarray, labels: np.ndarray,
                      spacing: Sequence[float]) -> Readout:  # fmt: skip
    """:func:`readout` of the ``labels`` that ``segmenter`` drew from ``cine``, with the consistency of its
    ED and ES frames (one frame's for a single frame): their probabilities are computed again (two frames
    of the cine's, so a few per cent of the segmentation's cost) and compared with their labels."""
    result = readout(labels, spacing)
    frames = {"ED": result.ed_frame, "ES": result.es_frame} if result.status == "ok" else {"ED": 0}
    cine, labels = (cine if cine.ndim == 4 else cine[None]), (labels if labels.ndim == 4 else labels[None])
    by_phase = {phase: labels[frame] for phase, frame in frames.items()}
    return replace(result, consistency=phase_consistency(segmenter, cine, frames, by_phase, spacing))
