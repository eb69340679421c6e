"""The clinical report of one segmented cine (``<name>_report.json``): what a reader of a cardiac MRI
report looks for, with where every number came from.

- LV and RV: EDV, ESV, SV (ml) and EF (%); LV myocardial mass at ED (g, 1.05 g/ml).
- Each volume and the mass indexed to body surface area (Mosteller: sqrt(height cm x weight kg / 3600)
  m^2) when height and weight are known: ACDC's Info.cfg (Height in cm, Weight in kg) beside a
  ``patientNNN_4d.nii.gz``, or the DICOM PatientSize (m) and PatientWeight (kg).
- The heart rate when the timing is known: DICOM HeartRate, else 60000 / NominalInterval (the R-R interval,
  ms), else the frames' TriggerTime spacing times their number (retrospective gating: the frames span one
  R-R interval), each named.
- Which frames were taken as ED and ES and by which rule (:func:`pipeline.clinical.indices.phases_from_curves`).
- LV and RV volumes, the LV EF and the indexed LV mass against published adult reference ranges, sex-specific where the input
  gives the sex (:mod:`pipeline.clinical.reference_ranges`, sources cited in the report).

A value that cannot be known (no height, no timing, a NIfTI without a sidecar) is null, with the reason
beside it; it is never an error and never a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.clinical.indices import ED_FIRST_TOLERANCE, MYOCARDIAL_DENSITY_G_PER_ML
from pipeline.clinical.quality_control import Quality, assess
from pipeline.clinical.readout import Readout
from pipeline.clinical.reference_ranges import mark_report

PHASE_METHOD = (
    "cycle rule: the LV volume curve smoothed around the cycle; ES at its minimum; ED at the first frame "
    "(where ACDC and trigger-ordered cines start, at the R wave) unless the smoothed curve peaks more than "
    f"{ED_FIRST_TOLERANCE:.0%} above it, then at that peak"
)


@dataclass(frozen=True)
class Subject:
    """What the input says about the patient and the timing; None where it says nothing.

    height_cm, weight_kg, sex ("F", "M" or None), heart_rate_bpm (DICOM HeartRate), rr_ms (DICOM
    NominalInterval), frame_ms (mean TriggerTime step) and where they came from (``source``).
    """

    height_cm: float | None = None
    weight_kg: float | None = None
    sex: str | None = None
    heart_rate_bpm: float | None = None
    rr_ms: float | None = None
    frame_ms: float | None = None
    source: str = ""


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def subject_from_info_cfg(cine: Path) -> Subject:
    """Height and weight from the Info.cfg beside an ACDC ``patientNNN_4d.nii.gz`` (nothing if absent)."""
    from pipeline.data.acdc import parse_info_cfg
    from pipeline.errors import DataError

    info_path = cine.parent / "Info.cfg"
    if not cine.name.endswith("_4d.nii.gz") or not info_path.is_file():
        return Subject()
    try:
        info = parse_info_cfg(info_path)
    except DataError:  # a damaged sidecar: the report says what it lacks, the case goes on
        return Subject(source=f"{info_path} (unreadable)")
    return Subject(
        height_cm=_positive(info.height_cm), weight_kg=_positive(info.weight_kg), source=str(info_path)
    )


def subject_from_dicom(patient: dict[str, Any], frame_ms: float | None) -> Subject:
    """From the DICOM header values of :class:`pipeline.data.dicom.DicomCine` (PatientSize is in m)."""
    size_m = _positive(patient.get("PatientSize"))
    sex = str(patient.get("PatientSex", "")).strip().upper()[:1] or None
    return Subject(height_cm=None if size_m is None else 100.0 * size_m, weight_kg=_positive(patient.get("PatientWeight")),
                   sex=sex if sex in ("F", "M") else None, heart_rate_bpm=_positive(patient.get("HeartRate")),
                   rr_ms=_positive(patient.get("NominalInterval")), frame_ms=_positive(frame_ms), source="DICOM header")  # fmt: skip


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area in m^2 (Mosteller, N Engl J Med 1987;317:1098)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


def _heart_rate(subject: Subject, n_frames: int) -> tuple[float | None, str]:
    if subject.heart_rate_bpm is not None:
        return subject.heart_rate_bpm, "DICOM HeartRate"
    if subject.rr_ms is not None:
        return 60000.0 / subject.rr_ms, "60000 / DICOM NominalInterval (the R-R interval)"
    if subject.frame_ms is not None and n_frames > 1:
        return 60000.0 / (subject.frame_ms * n_frames), (
            "60000 / (frames x mean TriggerTime step): retrospective gating assumed, the frames spanning one R-R interval"
        )
    if subject.source == "DICOM header":
        return None, "the DICOM headers give neither HeartRate, NominalInterval nor TriggerTime"
    return None, "the input carries no cardiac timing (NIfTI has none)"


def _number(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def clinical_report(result: Readout, subject: Subject, n_frames: int) -> dict[str, Any]:
    """The report's content: ventricles, myocardium, body size, heart rate, phases, each with its source."""
    ix = result.indices
    bsa = None
    body_reason = ""
    if subject.height_cm is not None and subject.weight_kg is not None:
        bsa = bsa_mosteller(subject.height_cm, subject.weight_kg)
    else:
        lacking = [k for k, v in (("height", subject.height_cm), ("weight", subject.weight_kg)) if v is None]
        body_reason = f"{' and '.join(lacking)} unknown ({subject.source or 'no Info.cfg or DICOM header'}): nothing indexed"

    def indexed(value: float) -> float | None:
        return None if bsa is None or not math.isfinite(value) else _number(value / bsa)

    ventricles = {}
    for side in ("LV", "RV"):
        edv, esv = ix[f"{side}_EDV"], ix[f"{side}_ESV"]
        sv = edv - esv
        ventricles[side] = {"EDV_ml": _number(edv), "ESV_ml": _number(esv), "SV_ml": _number(sv),
                            "EF_pct": _number(ix[f"{side}_EF"]), "EDV_ml_per_m2": indexed(edv),
                            "ESV_ml_per_m2": indexed(esv), "SV_ml_per_m2": indexed(sv)}  # fmt: skip
    rate, rate_source = _heart_rate(subject, n_frames)
    report: dict[str, Any] = {
        "status": result.status,
        "phases": {
            "frames": n_frames,
            "ed_frame": result.ed_frame,
            "es_frame": result.es_frame,
            "frames_are": "0-based",
            "method": PHASE_METHOD if result.status == "ok" else result.status,
        },
        "LV": ventricles["LV"],
        "RV": ventricles["RV"],
        "myocardium": {
            "mass_g": _number(ix["MYO_mass"]),
            "mass_g_per_m2": indexed(ix["MYO_mass"]),
            "at": "ED",
            "density_g_per_ml": MYOCARDIAL_DENSITY_G_PER_ML,
        },
        "body": {
            "height_cm": _number(subject.height_cm, 1),
            "weight_kg": _number(subject.weight_kg, 1),
            "sex": subject.sex,
            "bsa_m2": _number(bsa, 3),
            "bsa_formula": "Mosteller" if bsa else None,
            "source": subject.source or None,
            "reason": body_reason or None,
        },
        "heart_rate": {
            "bpm": _number(rate, 1),
            "source": rate_source if rate is not None else None,
            "reason": None if rate is not None else rate_source,
        },
        "subject": asdict(subject),
    }
    report["reference"] = mark_report(report, subject.sex)
    return report


def case_quality(labels: np.ndarray, result: Readout) -> Quality:
    """Quality control of a segmented (T, Z, Y, X) cine (pipeline.clinical.quality_control): the ED and ES
    volumes the read-out chose, its indices and LV curve; a cine without ED/ES (one frame, no LV) is
    checked as its first frame."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        labels = labels[None]
    if result.status != "ok":
        return assess({"ED": labels[0]}, consistency=result.consistency)
    return assess({"ED": labels[result.ed_frame], "ES": labels[result.es_frame]}, result.indices,
                  result.curves.get("LV"), result.consistency)  # fmt: skip
