"""``deunet predict`` on every input kind: a DICOM series or study, and folders of cases (ACDC tree, NIfTI
files, DICOM series) with a summary CSV, a bad case skipped and a non-zero exit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.checkpoint.io import save_checkpoint
from pipeline.data import dicom, imageio
from pipeline.data.acdc import write_patient
from pipeline.inference import predict_cli
from pipeline.models import build_model
from tests.conftest import make_record


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    save_checkpoint(path, model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=0)
    return path


def _predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> int:
    return predict_cli.main(["--model", str(checkpoint), "--input", str(source), "--out", str(out),
                             "--device", "cpu", "--tta", "none", *extra])  # fmt: skip


def _labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.Nifti1Image.from_filename(path)
    return imageio.to_memory(np.asarray(img.dataobj)), img.affine


def test_dicom_series_gives_the_labels_of_the_same_cine_as_nifti(checkpoint: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    record = make_record(t=6, z=4, y=20, x=24)
    series = tmp_path / "scan" / "sax_cine"
    dicom.write_series(record.cine, record.affine, series)
    assert _predict(checkpoint, series, tmp_path / "out_dicom", "--timing") == 0
    captured = capsys.readouterr()
    assert (
        "sax_cine: 6 frame(s)" in captured.out
        and "timing: import runtime" in captured.err
        and "load model" in captured.err
    )
    labels, affine = _labels(tmp_path / "out_dicom" / "sax_cine_labels.nii.gz")
    np.testing.assert_allclose(affine, record.affine, atol=1e-5)  # the DICOM geometry, as NIfTI
    # The cine the DICOM reader returns, written as NIfTI, segments to the same labels.
    image = imageio.read_image(series)
    imageio.save_nifti(image.array, image.affine, tmp_path / "same.nii.gz")
    assert _predict(checkpoint, tmp_path / "same.nii.gz", tmp_path / "out_nifti") == 0
    np.testing.assert_array_equal(labels, _labels(tmp_path / "out_nifti" / "same_labels.nii.gz")[0])
    assert json.loads((tmp_path / "out_dicom" / "sax_cine_indices.json").read_text())["status"] in (
        "ok",
        "no_lv",
    )


def test_study_with_series_folders_is_one_case(checkpoint: Path, tmp_path: Path) -> None:
    record = make_record(t=5, z=4, y=20, x=24)
    study = tmp_path / "study01"
    dicom.write_series(record.cine, record.affine, study / "series7", series_number=7, study_uid="1.2.3.4")
    still = make_record(t=1, z=3, y=16, x=16)
    dicom.write_series(still.cine, still.affine, study / "series1", series_number=1, study_uid="1.2.3.4")
    assert _predict(checkpoint, study, tmp_path / "out") == 0
    assert _labels(tmp_path / "out" / "study01_labels.nii.gz")[0].shape == record.cine.shape


def test_bad_dicom_case_names_the_file_and_writes_nothing(checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    record = make_record(t=5, z=4)
    series = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, series)
    (series / "z02_t01.dcm").unlink()  # a missing frame
    out = tmp_path / "out"
    assert _predict(checkpoint, series, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "z02_t00.dcm: the slice at" in err[0] and "a frame is missing" in err[0]
    assert not out.exists()


def test_folder_of_cases_writes_one_folder_each_and_a_summary(checkpoint: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # An ACDC-layout tree with two patients, and a broken third one.
    tree = tmp_path / "acdc"
    for i in (1, 2):
        write_patient(make_record(f"patient00{i}", seed=i), tree)
    (tree / "patient003").mkdir()
    (tree / "patient003" / "patient003_4d.nii.gz").write_bytes(b"not a nifti")
    assert _predict(checkpoint, tree, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "patient003_4d.nii.gz: " in captured.err and "2 of 3 case(s) done, 1 failed" in captured.out
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["case"] for r in rows] == ["patient001", "patient002", "patient003"]
    assert [r["status"] for r in rows[:2]] != ["failed", "failed"] and rows[2]["status"] == "failed"
    assert "patient003_4d.nii.gz" in rows[2]["error"] and rows[0]["error"] == ""
    assert float(rows[0]["LV_EDV"]) >= 0 or rows[0]["status"] == "no_lv"
    for pid in ("patient001", "patient002"):
        assert (tmp_path / "out" / pid / f"{pid}_labels.nii.gz").is_file()
    assert not (tmp_path / "out" / "patient003").exists()


def test_folders_of_nifti_files_and_of_dicom_series(checkpoint: Path, tmp_path: Path) -> None:
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    dicoms = tmp_path / "dicom"
    for i in (1, 2):
        record = make_record(seed=i)
        imageio.save_nifti(record.cine, record.affine, nifti / f"case{i}.nii.gz")
        dicom.write_series(record.cine, record.affine, dicoms / f"case{i}", study_uid=f"1.2.{i}")
    assert _predict(checkpoint, nifti, tmp_path / "out_nifti") == 0
    assert _predict(checkpoint, dicoms, tmp_path / "out_dicom") == 0
    for i in (1, 2):
        a = _labels(tmp_path / "out_nifti" / f"case{i}" / f"case{i}_labels.nii.gz")[0]
        b = _labels(tmp_path / "out_dicom" / f"case{i}" / f"case{i}_labels.nii.gz")[0]
        assert a.shape == b.shape == (6, 3, 20, 24)
    rows = list(csv.DictReader((tmp_path / "out_dicom" / "summary.csv").open()))
    assert [r["case"] for r in rows] == ["case1", "case2"] and all(r["status"] != "failed" for r in rows)


def test_folder_without_cines_is_one_clear_error(checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert _predict(checkpoint, tmp_path / "empty", tmp_path / "out") == 1
    assert "empty: holds no cine" in capsys.readouterr().err


def test_the_predict_module_imports_only_what_every_path_needs() -> None:
    """A fresh interpreter importing the CLI module: the heavy optional parts are left to their paths
    (torch: checkpoints; onnxruntime: ONNX exports; mlflow, pandas: an MLflow URI; torchvision: CUDA;
    scipy.ndimage, matplotlib: after the forward passes, from a thread). pydicom is not among them:
    nibabel imports it whenever it is installed."""
    import subprocess
    import sys

    later = ["torch", "onnxruntime", "mlflow", "pandas", "torchvision", "scipy.ndimage", "matplotlib"]
    code = (
        "import sys, pipeline.inference.predict_cli\n"
        f"print(','.join(m for m in {later!r} if m in sys.modules))\n"
        "print('nibabel' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, nibabel_loaded = out.splitlines()
    assert loaded == "", f"imported at start: {loaded}"
    assert nibabel_loaded == "True"  # the check sees the modules the CLI does import
