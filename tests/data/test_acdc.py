"""ACDC I/O: round trip through the NIfTI layout, and every bad input named with its file."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline.data.acdc import (
    PatientInfo,
    format_info_cfg,
    list_patients,
    parse_info_cfg,
    read_patient,
    write_patient,
)
from pipeline.errors import DataError
from tests.conftest import make_record


def test_round_trip_with_non_identity_affine(tmp_path: Path) -> None:
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    record = make_record(rotation=rot)
    folder = write_patient(record, tmp_path)
    back = read_patient(folder)

    assert back.patient_id == "patient001"
    np.testing.assert_array_equal(back.cine, record.cine)
    assert back.cine.shape == (6, 3, 20, 24) and back.cine.dtype == np.float32
    np.testing.assert_allclose(back.spacing, record.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.affine, record.affine, atol=1e-5)
    assert back.info == record.info
    for phase in ("ED", "ES"):
        np.testing.assert_array_equal(back.labels[phase], record.labels[phase])
    np.testing.assert_array_equal(back.cine_labels, record.cine_labels)
    # On disk NIfTI is (X, Y, Z, T): the last in-memory axis is the first on disk.
    disk = nib.load(folder / "patient001_4d.nii.gz")
    assert disk.shape == (24, 20, 3, 6)
    assert np.asarray(disk.dataobj)[5, 7, 2, 4] == record.cine[4, 2, 7, 5]
    # The ED/ES frame files equal the cine frames (as in ACDC).
    frame = np.asarray(nib.load(folder / f"patient001_frame{record.info.es:02d}.nii.gz").dataobj)
    np.testing.assert_array_equal(frame.transpose(2, 1, 0), record.cine[record.info.es - 1])


def test_real_acdc_patient_reads(acdc_roi: Path) -> None:
    rec = read_patient(acdc_roi / "patient002")
    assert rec.cine.shape == (30, 7, 95, 100)  # manifest: (X, Y, Z, T) = (100, 95, 7, 30)
    assert rec.spacing == pytest.approx((10.0, 1.3671875, 1.3671875))
    assert (rec.info.ed, rec.info.es, rec.info.group) == (1, 12, "DCM")
    assert set(np.unique(rec.labels["ED"])) == {0, 1, 2, 3}
    # ED frame file == cine frame ED-1 (stated by the dataset's README)
    ed = np.asarray(nib.load(acdc_roi / "patient002" / "patient002_frame01.nii.gz").dataobj).transpose(
        2, 1, 0
    )
    np.testing.assert_array_equal(ed, rec.cine[0])


def test_info_cfg_round_trip(tmp_path: Path) -> None:
    info = PatientInfo(ed=1, es=12, nb_frames=30, group="HCM", height_cm=181.0, weight_kg=77.5)
    path = tmp_path / "Info.cfg"
    path.write_text(format_info_cfg(info))
    assert parse_info_cfg(path) == info


# ---------------------------------------------------------------- bad input, each named with its file


def _gt(folder: Path, phase_frame: int) -> Path:
    return folder / f"patient001_frame{phase_frame:02d}_gt.nii.gz"


def _rewrite(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def test_truncated_gzip(patient_dir: Path) -> None:
    cine = patient_dir / "patient001_4d.nii.gz"
    blob = cine.read_bytes()
    cine.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"patient001_4d\.nii\.gz: cannot read NIfTI \(truncated or corrupt"):
        read_patient(patient_dir)


def test_not_a_nifti(patient_dir: Path) -> None:
    cine = patient_dir / "patient001_4d.nii.gz"
    cine.write_bytes(gzip.compress(b"this is not a NIfTI header at all" * 20))
    with pytest.raises(DataError, match=r"patient001_4d\.nii\.gz: cannot read NIfTI"):
        read_patient(patient_dir)


def test_3d_where_4d_expected(patient_dir: Path) -> None:
    _rewrite(patient_dir / "patient001_4d.nii.gz", np.zeros((24, 20, 3), np.int16))
    with pytest.raises(
        DataError, match=r"patient001_4d\.nii\.gz: expected a 4D image, got 3D shape \(24, 20, 3\)"
    ):
        read_patient(patient_dir)


def test_gt_shape_differs_from_frame(patient_dir: Path) -> None:
    _rewrite(_gt(patient_dir, 1), np.zeros((24, 20, 2), np.uint8))
    with pytest.raises(
        DataError,
        match=r"frame01_gt\.nii\.gz: shape \(24, 20, 2\) differs from the cine's frame shape \(24, 20, 3\)",
    ):
        read_patient(patient_dir)


def test_labels_outside_0_3(patient_dir: Path) -> None:
    data = np.zeros((24, 20, 3), np.uint8)
    data[1, 1, 1] = 7
    _rewrite(_gt(patient_dir, 4), data)
    with pytest.raises(
        DataError, match=r"frame04_gt\.nii\.gz: label values must be in \{0, 1, 2, 3\}, found \[7\]"
    ):
        read_patient(patient_dir)


def test_nan_intensities(patient_dir: Path) -> None:
    data = np.ones((24, 20, 3, 6), np.float32)
    data[2, 3, 1, 0] = np.nan
    _rewrite(patient_dir / "patient001_4d.nii.gz", data)
    with pytest.raises(DataError, match=r"patient001_4d\.nii\.gz: 1 voxel\(s\) are NaN or infinite"):
        read_patient(patient_dir)


def test_info_without_ed(patient_dir: Path) -> None:
    (patient_dir / "Info.cfg").write_text("ES: 4\nGroup: NOR\nNbFrame: 6\n")
    with pytest.raises(DataError, match=r"Info\.cfg: missing key\(s\) ED"):
        read_patient(patient_dir)


def test_info_es_beyond_nbframe(patient_dir: Path) -> None:
    (patient_dir / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: NOR\nNbFrame: 6\n")
    with pytest.raises(DataError, match=r"Info\.cfg: ES = 9 is outside 1\.\.NbFrame = 6"):
        read_patient(patient_dir)


def test_info_not_key_value(patient_dir: Path) -> None:
    (patient_dir / "Info.cfg").write_text("ED 1\n")
    with pytest.raises(DataError, match=r"Info\.cfg: line 1 is not 'Key: value'"):
        read_patient(patient_dir)


def test_nbframe_disagrees_with_cine(patient_dir: Path) -> None:
    (patient_dir / "Info.cfg").write_text("ED: 1\nES: 4\nGroup: NOR\nNbFrame: 8\n")
    with pytest.raises(
        DataError, match=r"patient001_4d\.nii\.gz: has 6 frames but Info\.cfg says NbFrame = 8"
    ):
        read_patient(patient_dir)


@pytest.mark.parametrize(
    "name", ["patient001_4d.nii.gz", "patient001_frame04.nii.gz", "patient001_frame01_gt.nii.gz", "Info.cfg"]
)
def test_missing_file(patient_dir: Path, name: str) -> None:
    (patient_dir / name).unlink()
    with pytest.raises(DataError, match=re.escape(name) + ": .*missing"):
        read_patient(patient_dir)


@pytest.mark.parametrize("name", ["patient001_4d.nii.gz", "patient001_frame01_gt.nii.gz", "Info.cfg"])
def test_unreadable_file_is_named(patient_dir: Path, name: str) -> None:
    # Running as root, permission bits do not stop a read: a folder where the file must be does.
    (patient_dir / name).unlink()
    (patient_dir / name).mkdir()
    with pytest.raises(DataError, match=re.escape(name) + r": (is not a regular file|cannot read Info.cfg)"):
        read_patient(patient_dir)


def test_list_patients_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder is missing"):
        list_patients(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no patient"):
        list_patients(tmp_path / "empty")


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_patient(make_record(), tmp_path)
    before = sorted(p.name for p in good.iterdir())

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("pipeline.data.imageio.nib.save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_patient(make_record(seed=1), tmp_path)
    assert sorted(p.name for p in good.iterdir()) == before  # old patient untouched
    assert [p.name for p in tmp_path.iterdir()] == ["patient001"]  # no temporary folder left
    shutil.rmtree(good)
