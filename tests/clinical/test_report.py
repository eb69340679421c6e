"""The per-case clinical report: BSA-indexed values from Info.cfg or DICOM, the heart rate from the DICOM
timing, ED/ES and how they were found; missing facts leave empty values with a reason, never an error."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint.io import save_checkpoint
from pipeline.clinical.readout import Readout
from pipeline.clinical.report import Subject, bsa_mosteller, clinical_report
from pipeline.data.acdc import write_patient
from pipeline.data.dicom import write_series
from pipeline.inference import predict_cli
from pipeline.models import build_model
from tests.conftest import make_record

INDICES = {"LV_EDV": 150.0, "LV_ESV": 60.0, "LV_EF": 60.0, "RV_EDV": 160.0, "RV_ESV": 80.0, "RV_EF": 50.0,
           "MYO_mass": 120.0}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", radius=1, base_channels=4, depth=2, norm="batch")
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=0)
    return path


def test_mosteller_and_indexing() -> None:
    assert bsa_mosteller(160.0, 90.0) == pytest.approx(2.0)  # sqrt(160 * 90 / 3600) = sqrt(4)
    assert bsa_mosteller(175.0, 70.0) == pytest.approx(1.8447, abs=1e-4)  # sqrt(12250 / 3600)
    result = Readout({}, 0, 9, INDICES)
    report = clinical_report(result, Subject(height_cm=160.0, weight_kg=90.0, source="x"), 25)
    assert report["body"]["bsa_m2"] == 2.0 and report["body"]["bsa_formula"] == "Mosteller"
    assert report["LV"] == {"EDV_ml": 150.0, "ESV_ml": 60.0, "SV_ml": 90.0, "EF_pct": 60.0, "EDV_ml_per_m2": 75.0,
                            "ESV_ml_per_m2": 30.0, "SV_ml_per_m2": 45.0}  # fmt: skip
    assert report["RV"]["SV_ml"] == 80.0 and report["myocardium"]["mass_g_per_m2"] == 60.0
    assert report["phases"]["ed_frame"] == 0 and report["phases"]["es_frame"] == 9
    assert report["phases"]["method"].startswith("cycle rule")


def test_missing_facts_are_empty_with_a_reason() -> None:
    report = clinical_report(Readout({}, 0, 9, INDICES), Subject(height_cm=170.0), 25)
    assert report["body"]["bsa_m2"] is None and "weight unknown" in report["body"]["reason"]
    assert all(report["LV"][k] is None for k in ("EDV_ml_per_m2", "ESV_ml_per_m2", "SV_ml_per_m2"))
    assert report["LV"]["EDV_ml"] == 150.0  # the absolute values stay
    assert report["heart_rate"] == {"bpm": None, "source": None,
                                    "reason": "the input carries no cardiac timing (NIfTI has none)"}  # fmt: skip
    nan = {k: math.nan for k in INDICES}
    empty = clinical_report(Readout({}, 0, 0, nan, "no_lv"), Subject(), 25)
    assert empty["LV"]["EF_pct"] is None and empty["phases"]["method"] == "no_lv"
    json.dumps(empty, allow_nan=False)  # strict JSON: no NaN anywhere


@pytest.mark.parametrize(("headers", "bpm", "source"), [
    ({"HeartRate": 72}, 72.0, "DICOM HeartRate"),
    ({"NominalInterval": 800}, 75.0, "NominalInterval"),
    ({}, 60000 / (40.0 * 6), "TriggerTime"),
])  # fmt: skip
def test_heart_rate_and_size_from_dicom(headers: dict, bpm: float, source: str, checkpoint: Path,
                                        tmp_path: Path) -> None:  # fmt: skip
    record = make_record(t=6, z=3, y=20, x=24)
    write_series(record.cine, record.affine, tmp_path / "series", frame_ms=40.0,
                 headers={"PatientSize": 1.6, "PatientWeight": 90, "PatientSex": "F", **headers})  # fmt: skip
    out = tmp_path / "out"
    assert (
        predict_cli.main(["--model", str(checkpoint), "--input", str(tmp_path / "series"), "--out", str(out)])
        == 0
    )
    report = json.loads((out / "series_report.json").read_text())
    assert (
        report["body"]["height_cm"] == 160.0
        and report["body"]["bsa_m2"] == 2.0
        and report["body"]["sex"] == "F"
    )
    assert (
        report["heart_rate"]["bpm"] == pytest.approx(bpm, abs=0.05)
        and source in report["heart_rate"]["source"]
    )
    indices = json.loads((out / "series_indices.json").read_text())
    assert report["LV"]["EDV_ml"] == pytest.approx(indices["LV_EDV"], abs=0.01)
    if indices["LV_EDV"] is not None:
        assert report["LV"]["EDV_ml_per_m2"] == pytest.approx(indices["LV_EDV"] / 2.0, abs=0.01)


def test_acdc_folder_reports_info_cfg_size_in_the_summary(checkpoint: Path, tmp_path: Path) -> None:
    """A folder of ACDC patients: Info.cfg's Height/Weight index each case; summary.csv carries them."""
    root = tmp_path / "raw"
    for i in (1, 2):
        write_patient(make_record(f"patient00{i}", t=6, z=3, y=20, x=24, seed=i), root)
    out = tmp_path / "out"
    assert predict_cli.main(["--model", str(checkpoint), "--input", str(root), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows and all(r["status"] for r in rows)
    for row in rows:
        report = json.loads((out / row["case"] / f"{row['case']}_report.json").read_text())
        assert report["body"]["source"].endswith("Info.cfg")
        assert (
            float(row["bsa_m2"])
            == pytest.approx(report["body"]["bsa_m2"])
            == pytest.approx(bsa_mosteller(170, 70), abs=1e-3)
        )
        assert row["heart_rate_bpm"] == ""  # NIfTI: no timing
        # quality control travels with every case: in the report and in the summary
        qc = report["quality"]
        assert set(qc) == {"ok", "score", "flags", "phase_scores", "measures"} and set(
            qc["phase_scores"]
        ) == {"ED", "ES"}
        # the model's own Dice estimate, from the TTA-averaged probabilities of the two frames
        assert all(0.0 <= qc["measures"][p]["estimated_dice"] <= 1.0 for p in ("ED", "ES"))
        assert row["qc_ok"] == str(qc["ok"]) and row["qc_flags"].split() == qc["flags"]
        assert float(row["qc_score"]) == pytest.approx(qc["score"])
