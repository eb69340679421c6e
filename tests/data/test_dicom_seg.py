"""DICOM SEG out: the labels of a frame round-trip through highdicom slice by slice, onto the right source
images; a SEG that cannot be written is one clear error and leaves no file."""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.clinical.readout import readout
from pipeline.data import dicom, dicom_seg
from pipeline.data.image_bytes import encode_labels
from pipeline.errors import DataError
from pipeline.inference import predict_cli
from tests.conftest import make_record


def _rotation(angle: float = 0.4) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return rz @ rx


@pytest.fixture
def series(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An oblique cine (4 frames x 3 slices of 20 x 24) in files named in no slice or time order."""
    record = make_record(t=4, z=3, y=20, x=24, rotation=_rotation())
    folder = tmp_path / "scan" / "sax_cine"
    dicom.write_series(record.cine, record.affine, folder, names=lambda z, t: f"IM{(7 * z + 5 * t) % 13:03d}")
    return record, folder


def _labels_by_source(seg: hd.seg.Segmentation, datasets: list) -> np.ndarray:  # type: ignore[type-arg]
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    return seg.get_pixels_by_source_instance(uids, combine_segments=True, dtype=np.uint8)


def test_seg_round_trips_the_labels_slice_by_slice_onto_their_source_images(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record, folder = series
    cine = dicom.read_dicom_dir(folder)
    t = 2
    # Asymmetric labels (a different pattern per slice, nothing symmetric in rows/columns), so a transposed
    # or flipped or slice-swapped mask cannot pass.
    labels = np.array(record.cine_labels[t])
    labels[0, :3, :5] = 1
    labels[1, -4:, :2] = 3
    labels[2, 2:5, -6:] = 2
    datasets = cine.frame_datasets(t)
    path = dicom_seg.write_segmentation(tmp_path / "out" / "sax_cine_seg_ES.dcm", datasets, labels, phase="ES",
                                        algorithm="unit-test-model")  # fmt: skip
    assert sorted(p.name for p in path.parent.iterdir()) == ["sax_cine_seg_ES.dcm"]  # no temporary left

    seg = hd.seg.segread(path)
    assert seg.SeriesDescription == "deunet ES" and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["RV", "MYO", "LV"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == [
        "53085002", "74281007", "87878005",
    ]  # fmt: skip
    assert {s.SegmentedPropertyCategoryCodeSequence[0].CodeValue for s in seg.SegmentSequence} == {"85756007"}
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "unit-test-model"
    # Every slice's mask is on that slice's image (by SOPInstanceUID), and equals the predicted labels.
    np.testing.assert_array_equal(_labels_by_source(seg, datasets), labels)
    for z, ds in enumerate(datasets):
        # the datasets are the files of frame t at slice z: their pixels are the cine the labels were made on
        np.testing.assert_allclose(
            ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), cine.image.array[t, z]
        )
        np.testing.assert_array_equal(_labels_by_source(seg, [ds])[0], labels[z])
    # Each frame references exactly its own source image.
    refs = {
        str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert refs == {str(ds.SOPInstanceUID) for ds in datasets}
    # Read back by plain pydicom too.
    assert pydicom.dcmread(path).SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"


def test_seg_of_a_stack_joined_from_single_slice_series(tmp_path: Path) -> None:
    record = make_record(t=3, z=3, y=16, x=18)
    study = tmp_path / "study"
    for z in range(3):  # each slice its own series, as some scanners write short-axis cines
        affine = record.affine.copy()
        affine[:3, 3] = (record.affine @ np.array([0, 0, z, 1.0]))[:3]
        dicom.write_series(record.cine[:, z : z + 1], affine, study / f"s{z}", series_number=z + 1,
                           study_uid="1.2.3.4")  # fmt: skip
    cine = dicom.read_dicom_dir(study)
    labels = np.array(record.cine_labels[0])
    datasets = cine.frame_datasets(0)
    path = dicom_seg.write_segmentation(tmp_path / "seg.dcm", datasets, labels, phase="ED")
    seg = hd.seg.segread(path)
    assert seg.SeriesDescription == "deunet ED"
    positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                 for f in seg.PerFrameFunctionalGroupsSequence]  # fmt: skip
    for ds in datasets:
        assert [float(v) for v in ds.ImagePositionPatient] in positions


def test_unwritable_output_is_one_clear_error_and_leaves_no_file(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record, folder = series
    cine = dicom.read_dicom_dir(folder)
    out = tmp_path / "locked"
    out.mkdir()
    target = out / "case_seg_ED.dcm"
    os.chmod(out, 0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(DataError, match=r"case_seg_ED\.dcm: cannot write the DICOM SEG"):
            dicom_seg.write_segmentation(target, cine.frame_datasets(0), record.cine_labels[0], phase="ED")
    finally:
        os.chmod(out, 0o700)
    assert list(out.iterdir()) == []


def test_a_failed_rename_leaves_neither_the_seg_nor_its_temporary(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record, folder = series
    cine = dicom.read_dicom_dir(folder)
    target = tmp_path / "out" / "case_seg_ED.dcm"
    target.mkdir(parents=True)  # a folder where the file should go: the final rename fails, even as root
    with pytest.raises(DataError, match=r"case_seg_ED\.dcm: cannot write the DICOM SEG"):
        dicom_seg.write_segmentation(target, cine.frame_datasets(0), record.cine_labels[0], phase="ED")
    assert [p.name for p in target.parent.iterdir()] == ["case_seg_ED.dcm"] and target.is_dir()
    assert list(target.iterdir()) == []


def test_labels_that_do_not_fit_the_images_are_one_clear_error(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record, folder = series
    cine = dicom.read_dicom_dir(folder)
    target = tmp_path / "case_seg_ED.dcm"
    with pytest.raises(DataError, match=r"case_seg_ED\.dcm: cannot build the DICOM SEG"):
        dicom_seg.write_segmentation(target, cine.frame_datasets(0), record.cine_labels[0].swapaxes(1, 2),
                                     phase="ED")  # fmt: skip
    assert list(tmp_path.iterdir()) == [tmp_path / "scan"]


def test_predict_on_dicom_writes_the_ed_and_es_seg_beside_the_other_outputs(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The CLI's case runner with a stand-in model that returns the phantom's own labels."""
    record, folder = series
    truth = record.cine_labels.astype(np.uint8)

    def model(image, _data):  # type: ignore[no-untyped-def]
        return encode_labels(truth, image.affine), readout(truth, image.spacing), truth

    model.models = ()  # type: ignore[attr-defined]  # a Predictor's model files: none (SEG names "deunet")
    case = predict_cli.Case("sax_cine", folder)
    result, _, _ = predict_cli._run_one(model, case, tmp_path / "out", None, predict_cli._Clock())  # type: ignore[arg-type]
    assert result.status == "ok"
    cine = dicom.read_dicom_dir(folder)
    for phase, frame in (("ED", result.ed_frame), ("ES", result.es_frame)):
        path = tmp_path / "out" / f"sax_cine_seg_{phase}.dcm"
        seg = hd.seg.segread(path)
        assert seg.SeriesDescription == f"deunet {phase}"
        np.testing.assert_array_equal(_labels_by_source(seg, cine.frame_datasets(frame)), truth[frame])
    assert (tmp_path / "out" / "sax_cine_labels.nii.gz").is_file()
