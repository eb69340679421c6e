"""DICOM cine series in: order, geometry and intensities from the headers; one clear error per bad case."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.data import dicom, imageio
from pipeline.data.phantom import PhantomConfig, iter_records
from pipeline.errors import DataError
from tests.conftest import make_record


def _rotation(angle: float = 0.4) -> np.ndarray:
    """An oblique short-axis orientation: rotations about two axes."""
    c, s = np.cos(angle), np.sin(angle)
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return rz @ rx


@pytest.fixture(scope="module")
def record():  # type: ignore[no-untyped-def]
    """A phantom patient (5 frames x 5 slices of 48 x 48, 8 mm apart, randomly oblique), read-only."""
    cfg = PhantomConfig(
        n_patients=1, matrix=(48, 48), n_frames=(5, 5), n_slices=(5, 5), slice_thickness_mm=(8.0, 8.0)
    )
    return next(iter_records(cfg))


def _shuffled_names(seed: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return lambda z, t: f"IM{rng.randrange(10**9):09d}"  # no order in the names, no suffix


def _edit(paths: list[Path], **changes: object) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value(ds) if callable(value) else value)
        ds.save_as(path, enforce_file_format=True)


def _files_of_slice(folder: Path, z: int, record) -> list[Path]:  # type: ignore[no-untyped-def]
    """The files at slice index ``z`` (from their positions, whatever their names)."""
    want = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ record.affine @ [0.0, 0.0, z, 1.0])[:3]
    return [p for p in sorted(folder.iterdir())
            if np.allclose(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient, want, atol=1e-3)]  # fmt: skip


def test_shuffled_series_reads_as_the_cine(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    files = dicom.write_series(record.cine, record.affine, folder, names=_shuffled_names())
    assert len(files) == 25
    image = imageio.read_image(folder)  # picked by the READERS registry, like a NIfTI file
    slope = float(pydicom.dcmread(files[0]).RescaleSlope)
    assert image.array.shape == record.cine.shape
    assert np.abs(image.array - record.cine).max() <= slope / 2 + 1e-3  # RescaleSlope/Intercept applied
    np.testing.assert_allclose(image.spacing, record.spacing, atol=1e-5)
    np.testing.assert_allclose(image.affine, record.affine, atol=1e-5)
    # The same cine written as NIfTI reads back with the same affine and spacing.
    imageio.save_nifti(record.cine, record.affine, tmp_path / "cine.nii.gz")
    nifti = imageio.read_image(tmp_path / "cine.nii.gz")
    np.testing.assert_allclose(nifti.affine, image.affine, atol=1e-5)


def test_frames_by_instance_number_without_trigger_time(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder, names=_shuffled_names(1))
    _edit(sorted(folder.iterdir()), TriggerTime=None)
    cine = dicom.read_dicom_dir(folder)
    assert cine.frame_ms is None
    assert np.abs(cine.image.array - record.cine).max() < 1.0


def test_study_picks_the_cine_among_other_series(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    study = tmp_path / "study"
    dicom.write_series(record.cine, record.affine, study / "sax", series_number=7)
    localiser = make_record(t=1, z=3, y=16, x=16)
    dicom.write_series(
        localiser.cine, localiser.affine, study / "loc", series_number=1, description="localiser"
    )
    (study / "DICOMDIR").write_bytes(b"index")  # skipped by name
    cine = dicom.read_dicom_dir(study)
    assert cine.image.array.shape == record.cine.shape and cine.description == "SAX cine"


def test_two_cine_series_are_ambiguous_until_one_is_chosen(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    study = tmp_path / "study"
    dicom.write_series(record.cine, record.affine, study / "sax", series_number=7)
    lax = make_record(t=4, z=2, y=12, x=12, rotation=_rotation(1.2))
    dicom.write_series(lax.cine, lax.affine, study / "lax", series_number=8, description="4ch cine")
    with pytest.raises(DataError, match=r"2 cine series, choose one with --series: .*SeriesNumber 7 'SAX cine'"
                                        r".*SeriesNumber 8 '4ch cine'") as err:  # fmt: skip
        dicom.read_dicom_dir(study)
    assert err.value.path == study
    assert dicom.read_dicom_dir(study, series="8").image.array.shape == lax.cine.shape
    with pytest.raises(DataError, match="no series '9' here"):
        dicom.read_dicom_dir(study, series="9")


def test_one_series_per_slice_is_joined(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    study = tmp_path / "study"
    spacing = np.linalg.norm(record.affine[:3, 2])
    for z in range(record.cine.shape[1]):
        affine = record.affine.copy()
        affine[:3, 3] += record.affine[:3, 2] * z
        dicom.write_series(record.cine[:, z : z + 1], affine, study / f"slice{z}", series_number=10 + z)
    image = dicom.read_dicom_dir(study).image
    assert image.array.shape == record.cine.shape
    assert image.spacing[0] == pytest.approx(spacing)


def test_missing_slice_is_an_uneven_gap(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder, names=_shuffled_names(2))
    gone = _files_of_slice(folder, 2, record)
    assert len(gone) == 5
    for path in gone:
        path.unlink()
    with pytest.raises(DataError, match=r"uneven slice gaps \(8.00, 16.00, 8.00 mm\).*missing slice") as err:
        dicom.read_dicom_dir(folder)
    assert err.value.path.parent == folder  # names a file of the slice after the gap


def test_uneven_slice_gaps(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder)
    normal = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ record.affine)[:3, 2] / 8.0
    for z in (3, 4):
        _edit(_files_of_slice(folder, z, record),
              ImagePositionPatient=lambda ds: list(np.asarray(ds.ImagePositionPatient, float) + 3.0 * normal))  # fmt: skip
    with pytest.raises(DataError, match=r"uneven slice gaps \(8.00, 8.00, 11.00, 8.00 mm\)") as err:
        dicom.read_dicom_dir(folder)
    assert err.value.path.name == "z03_t00.dcm"


def test_missing_frame_names_the_slice(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder)
    (folder / "z01_t03.dcm").unlink()
    with pytest.raises(DataError, match=r"z01_t00.dcm: the slice at .* mm has 4 frame\(s\), the others 5: "
                                        r"a frame is missing"):  # fmt: skip
        dicom.read_dicom_dir(folder)


def test_duplicate_file_is_refused(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder)
    for z in range(5):  # every slice has one extra copy of a frame: counts agree, times do not
        src = folder / f"z{z:02d}_t01.dcm"
        (folder / f"z{z:02d}_t01_copy.dcm").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=r"same slice and time as .*z00_t01.*a duplicate file"):
        dicom.read_dicom_dir(folder)


def test_non_cine_series_is_refused(tmp_path: Path) -> None:
    stack = make_record(t=1, z=4, y=10, x=10)
    dicom.write_series(stack.cine, stack.affine, tmp_path / "t1map", description="T1 map")
    with pytest.raises(DataError, match=r"t1map: no cine series .*'T1 map' \(4 slice\(s\), 1 frame\(s\)"):
        dicom.read_dicom_dir(tmp_path / "t1map")


def test_file_that_is_not_dicom_is_named(tmp_path: Path, record) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "series"
    dicom.write_series(record.cine, record.affine, folder)
    (folder / "notes.txt").write_text("acquired on Tuesday\n")
    with pytest.raises(DataError, match=r"notes.txt: is not a DICOM file"):
        dicom.read_dicom_dir(folder)


def test_a_folder_without_dicom_is_not_read_as_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    assert not dicom.is_dicom_dir(tmp_path)
    with pytest.raises(DataError, match="not a known image kind"):
        imageio.read_image(tmp_path)
