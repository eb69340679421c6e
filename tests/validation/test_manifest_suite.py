"""The Great Expectations suite fails on each kind of bad row and names the patient and the expectation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.acdc import read_patient
from pipeline.preprocessing.patient import manifest_rows
from pipeline.validation.config import ValidateConfig
from pipeline.validation.manifest_suite import COLUMNS, validate_manifest
from tests.conftest import make_record


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    rows = []
    for i in range(3):
        rec = make_record(f"patient{i + 1:03d}", t=10, z=4, y=52, x=56, seed=i)
        rows += manifest_rows(rec, Path("raw") / rec.patient_id)
    return pd.DataFrame(rows)


def _failed(frame: pd.DataFrame) -> dict[str, list[str]]:
    report = validate_manifest(frame, ValidateConfig())
    assert not report.success
    return {f"{c['expectation']}:{c['kwargs'].get('column', c['kwargs'].get('column_A', ''))}": c["failing_rows"]
            for c in report.failures}  # fmt: skip


def test_good_manifest_passes(good: pd.DataFrame) -> None:
    report = validate_manifest(good, ValidateConfig())
    assert report.success, report.to_text()
    assert report.n_rows == 6 and len(report.checks) > 20
    assert list(good.columns) == COLUMNS


def test_label_value_outside_0_3(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[3, "label_max"] = 5
    assert _failed(bad) == {"expect_column_values_to_be_in_set:label_max": ["patient002 ES"]}


def test_duplicate_patient_phase(good: pd.DataFrame) -> None:
    bad = pd.concat([good, good.iloc[[0]]], ignore_index=True)
    failed = _failed(bad)
    assert list(failed) == ["expect_compound_columns_to_be_unique:"]
    assert "patient001 ED" in failed["expect_compound_columns_to_be_unique:"]


def test_es_beyond_nb_frames_and_spacing_range(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[1, "frame"] = 99
    bad.loc[4, "spacing_x_mm"] = 7.0
    failed = _failed(bad)
    assert failed["expect_column_pair_values_a_to_be_greater_than_b:nb_frames"] == ["patient001 ES"]
    assert failed["expect_column_values_to_be_between:spacing_x_mm"] == ["patient003 ED"]


def test_shape_disagreement_and_non_finite(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[2, "label_rows"] = 51
    bad.loc[5, "intensity_finite"] = False
    failed = _failed(bad)
    assert failed["expect_column_pair_values_to_be_equal:rows"] == ["patient002 ED"]
    assert failed["expect_column_values_to_be_in_set:intensity_finite"] == ["patient003 ES"]


def test_same_images_under_two_patient_ids_are_reported(good: pd.DataFrame) -> None:
    copied = good[good["patient"] == "patient002"].assign(patient="patient009", label_file="raw/patient009/x")
    report = validate_manifest(pd.concat([good, copied], ignore_index=True), ValidateConfig())
    assert not report.success
    (check,) = report.failures
    assert check["kwargs"]["column_list"] == ["image_sha1", "label_sha1", "phase"]
    assert sorted(check["failing_rows"]) == [
        "patient002 ED",
        "patient002 ES",
        "patient009 ED",
        "patient009 ES",
    ]


def test_same_images_with_other_labels_are_a_warning_not_a_failure(good: pd.DataFrame) -> None:
    # ACDC's patient074/076: the same images, annotated twice
    twin = good[good["patient"] == "patient002"].assign(
        patient="patient009", label_file="raw/patient009/x", label_sha1=lambda d: d["label_sha1"] + "0"
    )
    report = validate_manifest(pd.concat([good, twin], ignore_index=True), ValidateConfig())
    assert report.success, report.to_text()
    assert report.duplicate_images == [["patient002", "patient009"]]
    assert "WARNING patients patient002 and patient009 share the same images" in report.to_text()
    assert report.to_dict()["duplicate_images"] == [["patient002", "patient009"]]


def test_schema_change_is_reported(good: pd.DataFrame) -> None:
    bad = good.drop(columns=["spacing_z_mm"])
    report = validate_manifest(bad, ValidateConfig())
    assert not report.success
    assert any(c["expectation"] == "expect_table_columns_to_match_set" for c in report.failures)
    assert "FAILED expect_table_columns_to_match_set" in report.to_text()


def test_real_manifest_passes(acdc_roi: Path) -> None:
    rows = []
    for pid in ("patient002", "patient004", "patient007"):
        rows += manifest_rows(read_patient(acdc_roi / pid, with_cine_labels=False), acdc_roi / pid)
    report = validate_manifest(pd.DataFrame(rows), ValidateConfig())
    assert report.success, report.to_text()
