"""Shared fixtures: small valid ACDC-layout patients made on the fly, and the real acdc-roi sample."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.acdc import PatientInfo, PatientRecord, affine_from_spacing, write_patient

REPO = Path(__file__).resolve().parents[1]
ACDC_ROI = Path(os.environ.get("ACDC_ROI", REPO.parent / "shared" / "data" / "acdc-roi"))

# Quiet, offline tools in every test process.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def make_record(pid: str = "patient001", t: int = 6, z: int = 3, y: int = 20, x: int = 24, seed: int = 0,
                rotation: np.ndarray | None = None) -> PatientRecord:  # fmt: skip
    """A small hand-made patient: a disk of LV, a ring of MYO and a blob of RV on every slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    labels = np.zeros((t, z, y, x), np.uint8)
    for f in range(t):
        r = 5 - 2 * np.sin(np.pi * f / t)  # contracts over the cycle
        d = np.hypot(yy - y / 2, xx - x / 2)
        lab = np.zeros((y, x), np.uint8)
        lab[(d >= r) & (d < r + 2)] = 2
        lab[d < r] = 3
        lab[(np.hypot(yy - y / 2, xx - 3) < 3) & (lab == 0)] = 1
        labels[f] = lab
    cine = (100 + 300 * (labels == 3) + 150 * (labels == 1) + 80 * (labels == 2)).astype(np.float32)
    cine += rng.normal(0, 5, cine.shape).astype(np.float32)
    info = PatientInfo(ed=1, es=t // 2 + 1, nb_frames=t, group="NOR", height_cm=170.0, weight_kg=70.0)
    spacing = (8.0, 1.5, 1.25)
    return PatientRecord(
        patient_id=pid,
        cine=np.round(cine),
        spacing=spacing,
        affine=affine_from_spacing(spacing, rotation),
        info=info,
        labels={"ED": labels[0], "ES": labels[info.es - 1]},
        cine_labels=labels,
    )


@pytest.fixture
def patient_dir(tmp_path: Path) -> Path:
    """A valid small patient folder written in the ACDC layout."""
    return write_patient(make_record(), tmp_path / "raw")


@pytest.fixture
def acdc_roi() -> Path:
    if not (ACDC_ROI / "patient002").is_dir():
        pytest.skip(f"real ACDC sample not found at {ACDC_ROI} (set ACDC_ROI)")
    return ACDC_ROI
