"""``deunet import-dicom``: DICOM studies -> the ACDC layout; a bad study is skipped, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.data import dicom, imageio
from tests.conftest import make_record


def test_studies_become_acdc_patients_and_a_bad_one_is_skipped(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    scans = tmp_path / "scans"
    good = make_record(t=5, z=4)
    dicom.write_series(good.cine, good.affine, scans / "study 01" / "sax", frame_ms=35.0)
    bad = make_record(t=5, z=4)
    dicom.write_series(bad.cine, bad.affine, scans / "study02")
    (scans / "study02" / "z03_t04.dcm").unlink()  # a missing frame
    out = tmp_path / "acdc"
    assert cli.main(["import-dicom", "--input", str(scans), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "z03_t00.dcm: the slice at" in captured.err and "1 of 2 stud(ies) imported" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["patient_study_01"]  # no temporary folder left either
    patient = out / "patient_study_01"
    image = imageio.read_image(patient / "patient_study_01_4d.nii.gz")
    expected = dicom.read_dicom_dir(scans / "study 01").image
    np.testing.assert_array_equal(image.array, expected.array)
    np.testing.assert_allclose(image.affine, good.affine, atol=1e-5)
    assert (patient / "Info.cfg").read_text() == "NbFrame: 5\n"
    assert json.loads((patient / "dicom_source.json").read_text())["frame_ms"] == pytest.approx(35.0)
    # Importing again never overwrites what is there.
    assert cli.main(["import-dicom", "--input", str(scans / "study 01"), "--out", str(out)]) == 1
    assert "patient_study_01: exists already" in capsys.readouterr().err


def test_nothing_to_import_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main(["import-dicom", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "empty: holds no DICOM study" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
