"""Evaluate a trained model on patients of the raw dataset, the ACDC challenge's way.

For each patient: segment ED and ES (and, with ``whole_cycle``, every frame) on the original grid;
3D Dice, HD, HD95 and ASSD per structure and phase, raw and after largest-connected-component
post-processing; clinical indices from the predicted ED/ES against the ground truth; on data with labels
of every frame (the synthetic phantom), metrics on every frame too (the paper's "average over the
entire video").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.clinical.indices import (
    CLINICAL_KEYS,
    clinical_indices,
    cycle_distance,
    phases_from_curves,
    volume_curves,
)
from pipeline.clinical.quality_control import assess, phase_consistency, qc_columns
from pipeline.data.acdc import read_patient
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.metrics import STRUCTURE_ORDER, evaluate_case
from pipeline.inference.postprocess import POSTPROCESS_MODES
from pipeline.inference.predict import Segmenter, postprocess_volume
from pipeline.vocabulary import PHASES

log = logging.getLogger(__name__)
#: Every post-processing variant is scored; ``evaluate.postprocess`` picks the headline one.
VARIANTS = POSTPROCESS_MODES


@dataclass
class PatientResult:
    patient: str
    fold: int
    cases: dict[str, list[dict[str, Any]]]  # variant -> [{"patient", "phase", "metrics"}]
    clinical_pred: dict[str, Any]
    clinical_ref: dict[str, Any]
    curves_pred: dict[str, list[float]] | None
    curves_ref: dict[str, list[float]] | None
    phases_from_curves: tuple[int, int] | None
    phases_ref: tuple[int, int]
    cycle_dice: dict[str, float] | None
    arrays: dict[str, np.ndarray]  # for figures: image/gt/pred at ED and ES
    quality: dict[str, Any] | None = None  # pipeline.clinical.quality_control on the chosen variant's ED/ES


def evaluate_patient(seg: Segmenter, folder: Path, fold: int, cfg: EvaluateConfig) -> PatientResult:
    rec = read_patient(folder, with_cine_labels=cfg.whole_cycle)
    ed, es = rec.frame_index("ED"), rec.frame_index("ES")
    if cfg.whole_cycle:
        pred_all = seg.predict(rec.cine, spacing=rec.spacing, postprocess="raw")
        pred = {"ED": pred_all[ed], "ES": pred_all[es]}
    else:
        pred_all = None
        two = seg.predict(rec.cine, [ed, es], spacing=rec.spacing, postprocess="raw")
        pred = {"ED": two[0], "ES": two[1]}
    variants = {m: {p: postprocess_volume(v, m) for p, v in pred.items()} for m in VARIANTS}
    cases = {
        name: [
            {
                "patient": rec.patient_id,
                "phase": p,
                "metrics": evaluate_case(v[p], rec.labels[p], rec.spacing),
            }
            for p in PHASES
        ]
        for name, v in variants.items()
    }
    chosen = variants[cfg.postprocess]
    curves_pred = curves_ref = None
    from_curves = None
    cycle_dice = None
    if pred_all is not None:
        curves = volume_curves(pred_all, rec.spacing)
        curves_pred = {k: v.tolist() for k, v in curves.items()}
        try:
            from_curves = phases_from_curves(curves)
        except ValueError as exc:  # an empty LV prediction on every frame: reported, not fatal
            log.warning("%s: %s", rec.patient_id, exc)
        if rec.cine_labels is not None:
            curves_ref = {k: v.tolist() for k, v in volume_curves(rec.cine_labels, rec.spacing).items()}
            per_frame = [
                evaluate_case(pred_all[t], rec.cine_labels[t], rec.spacing) for t in range(rec.n_frames)
            ]
            cycle_dice = {s: float(np.mean([m[s]["dice"] for m in per_frame])) for s in STRUCTURE_ORDER}
    clinical_pred = clinical_indices(chosen["ED"], chosen["ES"], rec.spacing)
    # consistency: the model's own Dice estimate from the probabilities behind the ED and ES labels
    consistency = phase_consistency(seg, rec.cine, {"ED": ed, "ES": es}, chosen, rec.spacing)
    quality = assess(chosen, clinical_pred, None if curves_pred is None else curves_pred["LV"], consistency)
    return PatientResult(
        quality=quality.as_record(),
        patient=rec.patient_id,
        fold=fold,
        cases=cases,
        clinical_pred=clinical_pred,
        clinical_ref=clinical_indices(rec.labels["ED"], rec.labels["ES"], rec.spacing),
        curves_pred=curves_pred,
        curves_ref=curves_ref,
        phases_from_curves=from_curves,
        phases_ref=(ed, es),
        cycle_dice=cycle_dice,
        arrays={
            "spacing": np.asarray(rec.spacing),
            **{
                f"{k}_{p}": a
                for p in PHASES
                for k, a in (
                    ("image", rec.cine[rec.frame_index(p)]),
                    ("gt", rec.labels[p]),
                    ("pred", chosen[p]),
                )
            },
        },
    )


def evaluate_patients(seg: Segmenter, raw_root: Path, patients: list[str], fold: int, cfg: EvaluateConfig,
                      progress: bool = True) -> list[PatientResult]:  # fmt: skip
    """Evaluate ``patients`` (folders under ``raw_root``) with one fold's model."""
    return [
        evaluate_patient(seg, raw_root / pid, fold, cfg)
        for pid in tqdm(patients, desc=f"evaluate fold {fold}", disable=not progress)
    ]


def clinical_table(results: list[PatientResult]) -> list[dict[str, Any]]:
    """One row per patient: predicted and reference clinical indices (and their statuses), where ED/ES
    were found on the curves, and the prediction's quality control (qc_ok, qc_score, qc_flags)."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"patient": r.patient, "fold": r.fold}
        for key in CLINICAL_KEYS:
            row[f"{key}_pred"] = r.clinical_pred[key]
            row[f"{key}_ref"] = r.clinical_ref[key]
        if r.phases_from_curves is not None:
            row["ED_from_curve"], row["ES_from_curve"] = r.phases_from_curves
            n = len(next(iter((r.curves_pred or {}).values()), [])) or 1
            for p, found, ref in zip(("ED", "ES"), r.phases_from_curves, r.phases_ref, strict=True):
                row[f"{p}_curve_off"] = cycle_distance(
                    found, ref, n
                )  # frames from the reference, around the cycle
        row["ED_ref"], row["ES_ref"] = r.phases_ref
        if r.quality is not None:  # quality control of the prediction (pipeline.clinical.quality_control)
            row.update(qc_columns(r.quality))
        rows.append(row)
    return rows
