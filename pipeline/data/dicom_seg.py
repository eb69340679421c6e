"""DICOM Segmentation (SEG) out: the predicted labels of one cine frame, beside the DICOM images they came from.

A DICOM cine segmented by ``deunet predict`` also gets ``<case>_seg_ED.dcm`` and ``<case>_seg_ES.dcm``:
Segmentation Storage objects (written with highdicom) in the source study, one binary segment per
structure (1 RV, 2 MYO, 3 LV, coded with SNOMED CT) and one frame per (slice, segment), each frame
referencing the SOPInstanceUID of the image it was segmented on, so DICOM viewers (3D Slicer, OHIF, ...)
overlay the labels on the images.

The label volume of a frame is ``(Z, Y, X)`` in the order :func:`pipeline.data.dicom.read_series` built the
cine: ``labels[z]`` is the mask of ``datasets[z]`` (rows x columns, as pydicom's ``pixel_array``).

highdicom is imported only when a SEG is written. Every failure is one :class:`~pipeline.errors.DataError`
naming the SEG file; the file is written to a temporary sibling and renamed, so it is whole or absent.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__
from pipeline.errors import DataError

#: Segment number (= label value) -> (label, SNOMED CT code of the structure, its meaning).
SEGMENTS = {
    1: ("RV", "53085002", "Right ventricle"),
    2: ("MYO", "74281007", "Myocardium"),
    3: ("LV", "87878005", "Left ventricle"),
}
#: Segmented property category of every segment (SNOMED CT).
TISSUE = ("85756007", "Tissue")
#: SeriesNumber of the SEG of each phase.
SERIES_NUMBERS = {"ED": 9901, "ES": 9902}
MANUFACTURER = "deunet-pipeline"
#: Patient and study elements highdicom copies from the source images; anonymised files often lack them.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
          "StudyDate", "StudyTime")  # fmt: skip


def seg_path(out: Path | str, case: str, phase: str) -> Path:
    """``<out>/<case>_seg_<phase>.dcm``."""
    return Path(out) / f"{case}_seg_{phase}.dcm"


def _with_type2(ds: Any) -> Any:
    """``ds``, or a copy of it with the missing patient and study elements present and empty."""
    missing = [k for k in _TYPE2 if k not in ds]
    if not missing:
        return ds
    ds = copy.deepcopy(ds)
    for keyword in missing:
        setattr(ds, keyword, "")
    return ds


def _segment_descriptions(algorithm: str, version: str) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64] or "deunet", family=codes.cid7162.ArtificialIntelligence, version=version[:64]
    )
    category = hd.sr.CodedConcept(TISSUE[0], "SCT", TISSUE[1])
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
        )
        for number, (label, code, meaning) in SEGMENTS.items()
    ]


def build_segmentation(datasets: Sequence[Any], labels: np.ndarray, *, phase: str,
                       algorithm: str = "deunet", version: str = __version__) -> Any:  # fmt: skip
    """The ``highdicom.seg.Segmentation`` of one cine frame.

    Args:
        datasets: the pydicom datasets of the frame's slices, in the order of the label volume's first axis.
        labels: ``(Z, Y, X)`` labels (0 background, 1 RV, 2 MYO, 3 LV); ``labels[z]`` is rows x columns of
            ``datasets[z]``.
        phase: ``"ED"`` or ``"ES"`` (the series description is ``deunet <phase>``).
        algorithm, version: the model, recorded in every segment's AlgorithmIdentificationSequence.

    Raises:
        ValueError: labels and datasets disagree (count, matrix) or labels hold values outside 0..3.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != len(datasets):
        raise ValueError(f"labels of shape {labels.shape} for {len(datasets)} source image(s)")
    for z, ds in enumerate(datasets):
        if labels.shape[1:] != (int(ds.Rows), int(ds.Columns)):
            raise ValueError(f"labels {labels.shape[1:]} for slice {z} of Rows x Columns "
                             f"{(int(ds.Rows), int(ds.Columns))}")  # fmt: skip
    values = set(np.unique(labels).tolist())
    if not values <= {0, *SEGMENTS}:
        raise ValueError(
            f"label values {sorted(values - {0, *SEGMENTS})} are not 0 (background) or a segment"
        )
    datasets = [_with_type2(ds) for ds in datasets]
    series = {str(ds.SeriesInstanceUID) for ds in datasets}
    kwargs: dict[str, Any] = {}
    sources = list(datasets)
    if len(series) > 1:
        # A stack joined from single-slice series: highdicom takes one series as the source images, so the
        # frames are placed by each slice's own geometry and the other images are referenced as further
        # sources.
        first = datasets[0]
        kwargs = {
            "pixel_measures": hd.PixelMeasuresSequence(
                pixel_spacing=[float(v) for v in first.PixelSpacing],
                slice_thickness=float(first.get("SliceThickness") or 1.0),
            ),
            "plane_orientation": hd.PlaneOrientationSequence(
                coordinate_system="PATIENT",
                image_orientation=[float(v) for v in first.ImageOrientationPatient],
            ),
            "plane_positions": [
                hd.PlanePositionSequence(
                    coordinate_system="PATIENT", image_position=[float(v) for v in ds.ImagePositionPatient]
                )
                for ds in datasets
            ],
            "further_source_images": [
                ds for ds in datasets if ds.SeriesInstanceUID != first.SeriesInstanceUID
            ],
        }
        sources = [ds for ds in datasets if ds.SeriesInstanceUID == first.SeriesInstanceUID]
    with warnings.catch_warnings():  # highdicom's advice on the source's PatientName format
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return _segmentation(sources, labels, phase, algorithm, version, kwargs)


def _segmentation(sources: list[Any], labels: np.ndarray, phase: str, algorithm: str, version: str,
                  kwargs: dict[str, Any]) -> Any:  # fmt: skip
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(algorithm, version),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS.get(phase, 9900),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=(algorithm[:64] or "deunet"),
        software_versions=f"deunet-pipeline {version}"[:64],
        device_serial_number="0",
        series_description=f"deunet {phase}"[:64],
        content_label=f"DEUNET_{phase}"[:16].upper(),
        content_description=f"RV, MYO and LV at {phase} (deunet predict)"[:64],
        omit_empty_frames=False,  # every slice has its frames: viewers and readers see the whole stack
        **kwargs,
    )


def write_segmentation(path: Path | str, datasets: Sequence[Any], labels: np.ndarray, *, phase: str,
                       algorithm: str = "deunet", version: str = __version__) -> Path:  # fmt: skip
    """Build the SEG of one cine frame (:func:`build_segmentation`) and write it atomically to ``path``.

    Raises:
        DataError: naming ``path``, when the SEG cannot be built or written; no file (nor temporary file)
            is left behind.
    """
    path = Path(path)
    try:
        seg = build_segmentation(datasets, labels, phase=phase, algorithm=algorithm, version=version)
    except Exception as exc:  # highdicom and pydicom raise ValueError, AttributeError, TypeError, ...
        raise DataError(path, f"cannot build the DICOM SEG ({type(exc).__name__}: {exc})") from None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except Exception as exc:
        raise DataError(path, f"cannot write the DICOM SEG ({type(exc).__name__}: {exc})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path
