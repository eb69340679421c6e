"""DICOM cine series in: a folder (or the members of a zip) of single-frame MR images as one cine.

Clinical cine comes off the scanner as DICOM: one file per (slice, frame), in no particular order, often
beside other series of the same study (localisers, long-axis cines, T1 maps). This module turns such a
set of files into an :class:`~pipeline.data.imageio.Image` in the memory convention, ``(T, Z, Y, X)``
float32 with ``spacing (z, y, x)`` mm and a NIfTI (RAS) affine, so everything downstream is the same as
for a NIfTI cine.

- **Series.** Files are grouped by SeriesInstanceUID. A cine series has two or more frames at every slice
  position. A folder with one cine series takes it; a study where each short-axis slice is its own
  series (common on some scanners) is joined when those series share orientation, matrix, spacing and
  frame count; anything else ambiguous is refused with the candidates listed, and ``series=`` (a UID or
  SeriesNumber) picks one.
- **Order.** Slices by their position along the slice normal (ImagePositionPatient . (row x column
  cosines)); frames by TriggerTime, else InstanceNumber.
- **Geometry.** In-plane spacing from PixelSpacing, slice spacing from the distance between slice
  positions (which must be even: a gap twice the others is a missing slice), intensities through
  RescaleSlope and RescaleIntercept.
- **Errors.** Every problem is one :class:`~pipeline.errors.DataError` naming the file (or the folder) and
  what is wrong; nothing is written by this module.

pydicom is imported only when a DICOM input is read, so NIfTI users do not pay for it.
:func:`write_series` writes a minimal but standard MR series (tests, demos, and a check that a DICOM
path works end to end).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.image import Image
from pipeline.errors import DataError

#: Positions closer than this along the slice normal are one slice (mm).
POSITION_TOLERANCE_MM = 0.05
#: A slice gap may differ from the median gap by this fraction before the stack counts as uneven.
GAP_TOLERANCE = 0.1
#: Orientation cosines may differ by this much within one stack.
ORIENTATION_TOLERANCE = 1e-3
#: Files skipped without a word: the DICOMDIR index and hidden files (``.DS_Store``, ...).
IGNORED_NAMES = ("DICOMDIR",)
#: Largest number of files one series folder may hold (a guard against pointing at a whole archive).
MAX_FILES = 20_000

_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage SOP class


@dataclass(frozen=True)
class _Slice:
    """One single-frame image file's header, enough to place it in the cine."""

    name: str
    series: str
    series_number: int | None
    description: str
    orientation: tuple[float, ...]
    position: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    trigger_time: float | None
    instance: int | None
    thickness: float | None
    load: Callable[[], Any] = field(repr=False, compare=False)

    @property
    def normal(self) -> np.ndarray:
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        return np.cross(row, col)


@dataclass(frozen=True)
class DicomCine:
    """A cine read from DICOM: the image plus what the headers say about the scan."""

    image: Image
    series: str
    description: str
    frame_ms: float | None  # mean TriggerTime step, None without TriggerTime
    files: int
    patient: dict[
        str, Any
    ]  # PatientID, PatientSex, PatientSize (m), PatientWeight (kg), HeartRate, NominalInterval
    #: the files as ``[slice][frame]``, in the order of the image's Z and T axes
    layout: tuple[tuple[_Slice, ...], ...] = field(default=(), repr=False, compare=False)

    def frame_datasets(self, t: int) -> list[Any]:
        """The pydicom datasets of frame ``t``'s slices, in the image's Z order (``image.array[t, z]`` is
        ``datasets[z].pixel_array`` rescaled): the source images of a segmentation of that frame."""
        return [files[t].load() for files in self.layout]


# ---------------------------------------------------------------- recognising DICOM


def has_dicm_preamble(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def ignored_name(name: str) -> bool:
    """A file name that is never a series' image: hidden (``.DS_Store``, ...) or :data:`IGNORED_NAMES`."""
    return name.startswith(".") or name.upper() in IGNORED_NAMES


def _is_candidate(path: Path) -> bool:
    return path.is_file() and not ignored_name(path.name)


def series_files(folder: Path) -> list[Path]:
    """The files of ``folder`` (recursively) that may be DICOM images, sorted by name."""
    files = sorted(p for p in folder.rglob("*") if _is_candidate(p))
    if len(files) > MAX_FILES:
        raise DataError(folder, f"holds {len(files)} files, more than the {MAX_FILES} of one study; "
                                "point at one study or series folder")  # fmt: skip
    return files


def is_dicom_dir(path: Path) -> bool:
    """A folder holding at least one DICOM Part 10 file directly (not only in sub-folders)."""
    return path.is_dir() and any(has_dicm_preamble(p) for p in path.iterdir() if _is_candidate(p))


def first_dicom(folder: Path) -> Path | None:
    """The first DICOM Part 10 file below ``folder`` (in name order), or None."""
    return next((p for p in series_files(folder) if has_dicm_preamble(p)), None)


def _study_uid(first: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(first, stop_before_pixels=True).get("StudyInstanceUID", ""))


def study_folders(root: Path) -> list[Path] | None:
    """The cases of a folder of DICOM: ``[root]`` when it is one series or one study (DICOM files in it, one
    sub-folder with DICOM, or series sub-folders sharing one StudyInstanceUID), else its sub-folders that
    hold DICOM (one case each; an empty list when none does), or None when ``root`` is not a folder."""
    if not root.is_dir():
        return None
    if is_dicom_dir(root):
        return [root]
    # One listing and one header read per sub-folder: its first DICOM file says both that it holds DICOM
    # and which study it belongs to.
    firsts = {p: first_dicom(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    found = {p: first for p, first in firsts.items() if first is not None}
    folders = list(found)
    studies = {_study_uid(first) for first in found.values()}
    if len(folders) == 1 or (len(studies) == 1 and "" not in studies):
        return [root]
    return folders


# ---------------------------------------------------------------- reading headers


def _float_tuple(ds: Any, keyword: str, n: int, name: str) -> tuple[float, ...]:
    value = ds.get(keyword)
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(name, f"{keyword} is missing or not numeric ({value!r})") from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise DataError(name, f"{keyword} must hold {n} finite numbers, got {value!r}")
    return out


def _optional_number(ds: Any, keyword: str, kind: type = float) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(float(number)) else None


def _header(name: str, ds: Any, load: Callable[[], Any]) -> _Slice | None:
    """The header of one file, or None for a DICOM object that is not an image (SR, presentation state)."""
    if "PixelData" not in ds and ds.get("Rows") is None:
        return None
    frames = _optional_number(ds, "NumberOfFrames", int)
    if frames is not None and frames > 1:
        raise DataError(name, f"multi-frame (enhanced) DICOM with {frames} frames is not supported; "
                              "export the series as single-frame images")  # fmt: skip
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(name, "colour image (SamplesPerPixel != 1): a cine MR image is greyscale")
    orientation = _float_tuple(ds, "ImageOrientationPatient", 6, name)
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise DataError(name, f"ImageOrientationPatient {orientation} is not two orthonormal directions")
    spacing = _float_tuple(ds, "PixelSpacing", 2, name)
    if min(spacing) <= 0:
        raise DataError(name, f"PixelSpacing must be positive, got {spacing}")
    series = str(ds.get("SeriesInstanceUID") or f"series-{ds.get('SeriesNumber', '?')}")
    return _Slice(
        name=name, series=series, series_number=_optional_number(ds, "SeriesNumber", int),
        description=str(ds.get("SeriesDescription", "")).strip(), orientation=orientation,
        position=_float_tuple(ds, "ImagePositionPatient", 3, name),  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        shape=(int(ds.Rows), int(ds.Columns)), trigger_time=_optional_number(ds, "TriggerTime"),
        instance=_optional_number(ds, "InstanceNumber", int), thickness=_optional_number(ds, "SliceThickness"),
        load=load,
    )  # fmt: skip


def _read(name: str, source: Path | bytes, headers_only: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    fp: Any = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        return pydicom.dcmread(fp, stop_before_pixels=headers_only)
    except InvalidDicomError:
        raise DataError(name, "is not a DICOM file (no DICM preamble); remove it or point at the series "
                              "folder only") from None  # fmt: skip
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(name, f"cannot read DICOM ({type(exc).__name__}: {exc})") from None


def read_headers(sources: Iterable[tuple[str, Path | bytes]]) -> list[_Slice]:
    """Parse every source's header (``(name, path or bytes)``); non-image DICOM objects are skipped."""
    slices = []
    for name, source in sources:
        ds = _read(name, source, headers_only=True)

        def load(name: str = name, source: Path | bytes = source) -> Any:
            return _read(name, source, headers_only=False)

        try:
            item = _header(name, ds, load)
        except DataError:
            raise
        except Exception as exc:  # a damaged element pydicom parses lazily (bad VR, odd value)
            raise DataError(name, f"cannot read the DICOM header ({type(exc).__name__}: {exc})") from None
        if item is not None:
            slices.append(item)
    return slices


# ---------------------------------------------------------------- series -> stack


def _cluster(values: Sequence[float], tolerance: float) -> list[float]:
    """Sorted distinct values, merging those closer than ``tolerance``."""
    out: list[float] = []
    for v in sorted(values):
        if not out or v - out[-1] > tolerance:
            out.append(v)
    return out


def _locations(items: Sequence[_Slice]) -> tuple[np.ndarray, list[float]]:
    """Each item's position along the first item's slice normal, and the distinct slice locations."""
    normal = items[0].normal
    pos = np.array([np.dot(normal, it.position) for it in items])
    return pos, _cluster(pos.tolist(), POSITION_TOLERANCE_MM)


def _describe(uid: str, items: Sequence[_Slice]) -> str:
    _, locations = _locations(items)
    first = items[0]
    label = f"SeriesNumber {first.series_number}" if first.series_number is not None else uid
    desc = f" '{first.description}'" if first.description else ""
    return f"{label}{desc} ({len(locations)} slice(s), {len(items) // max(1, len(locations))} frame(s), " \
           f"{len(items)} file(s), SeriesInstanceUID {uid})"  # fmt: skip


def _is_cine(items: Sequence[_Slice]) -> bool:
    _, locations = _locations(items)
    return len(items) >= 2 * len(locations)


def _joinable(groups: Sequence[Sequence[_Slice]]) -> bool:
    """Single-slice cine series of one stack: same orientation, matrix, spacing and frame count."""
    first = groups[0][0]
    for items in groups:
        if len(_locations(items)[1]) != 1 or len(items) != len(groups[0]):
            return False
        it = items[0]
        if it.shape != first.shape or not np.allclose(it.pixel_spacing, first.pixel_spacing, atol=1e-3):
            return False
        if not np.allclose(it.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            return False
    return len(groups) > 1


def choose_series(slices: Sequence[_Slice], where: str | Path, series: str | None = None) -> list[_Slice]:
    """The files of the cine to read: the one cine series, a stack of single-slice cine series, or the
    series named by ``series`` (a SeriesInstanceUID or SeriesNumber); DataError listing the candidates."""
    if not slices:
        raise DataError(where, "holds no DICOM image")
    grouped: dict[str, list[_Slice]] = defaultdict(list)
    for it in slices:
        grouped[it.series].append(it)
    # Listed (and joined) in SeriesNumber order, so messages do not depend on the file system.
    by_series = dict(sorted(grouped.items(), key=lambda kv: (kv[1][0].series_number or 0, kv[0])))
    if series is not None:
        chosen = [
            items for uid, items in by_series.items() if series in (uid, str(items[0].series_number))
        ]  # fmt: skip
        if not chosen:
            listing = "; ".join(_describe(u, i) for u, i in by_series.items())
            raise DataError(where, f"no series {series!r} here; the series are: {listing}")
        return [it for items in chosen for it in items]
    cines = {uid: items for uid, items in by_series.items() if _is_cine(items)}
    if not cines:
        listing = "; ".join(_describe(u, i) for u, i in by_series.items())
        raise DataError(where, f"no cine series (one with several frames at every slice position): {listing}")
    if len(cines) == 1:
        return next(iter(cines.values()))
    groups = list(cines.values())
    if _joinable(groups):
        return [it for items in groups for it in items]
    listing = "; ".join(_describe(u, i) for u, i in cines.items())
    raise DataError(where, f"{len(cines)} cine series, choose one with --series: {listing}")


def _check_uniform(items: Sequence[_Slice]) -> None:
    first = items[0]
    for it in items[1:]:
        if it.shape != first.shape:
            raise DataError(it.name, f"matrix {it.shape} differs from {first.shape} of {first.name}")
        if not np.allclose(it.pixel_spacing, first.pixel_spacing, atol=1e-3):
            raise DataError(it.name, f"PixelSpacing {it.pixel_spacing} differs from {first.pixel_spacing} "
                                     f"of {first.name}")  # fmt: skip
        if not np.allclose(it.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise DataError(it.name, f"ImageOrientationPatient {it.orientation} differs from "
                                     f"{first.orientation} of {first.name}: not one stack")  # fmt: skip


def _frame_key(items: Sequence[_Slice]) -> Callable[[_Slice], tuple[float, ...]]:
    """Order frames by TriggerTime where every file has one (ties broken by InstanceNumber), else by
    InstanceNumber; :func:`stack` breaks remaining ties by name, so the order never depends on the file
    system, and refuses two files with the same key."""
    if all(it.trigger_time is not None for it in items):
        return lambda it: (float(it.trigger_time or 0.0), float(it.instance or 0))
    if all(it.instance is not None for it in items):
        return lambda it: (float(it.instance or 0),)
    missing = next(it for it in items if it.instance is None)
    raise DataError(missing.name, "has neither TriggerTime nor InstanceNumber: the frame order is unknown")


def stack(items: Sequence[_Slice]) -> tuple[list[list[_Slice]], float]:
    """Files as ``[slice][frame]`` (slices along the normal, frames in time) and the slice spacing (mm).

    Raises:
        DataError: mixed matrices, spacings or orientations; a slice with fewer (or more) frames than the
            others; two files at one slice and time; uneven gaps between slice positions.
    """
    _check_uniform(items)
    pos, locations = _locations(items)
    per_slice: list[list[_Slice]] = [[] for _ in locations]
    for it, p in zip(items, pos, strict=True):
        k = min(range(len(locations)), key=lambda i: abs(locations[i] - p))
        per_slice[k].append(it)
    key = _frame_key(items)
    counts = [len(s) for s in per_slice]
    expected = max(set(counts), key=lambda c: (counts.count(c), c))
    for k, files in enumerate(per_slice):
        files.sort(key=lambda it: (key(it), it.name))
        if len(files) != expected:
            what = "missing" if len(files) < expected else "extra"
            raise DataError(files[0].name, f"the slice at {locations[k]:.2f} mm has {len(files)} frame(s), "
                                           f"the others {expected}: a frame is {what}")  # fmt: skip
        keys = [key(it) for it in files]
        for a, b, ka, kb in zip(files, files[1:], keys, keys[1:], strict=False):
            if ka == kb:
                raise DataError(b.name, f"same slice and time as {a.name} (a duplicate file?)")
    if len(locations) == 1:
        first = per_slice[0][0]
        return per_slice, float(first.thickness or 1.0)
    gaps = np.diff(locations)
    median = float(np.median(gaps))
    bad = np.abs(gaps - median) > GAP_TOLERANCE * median
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(per_slice[k + 1][0].name,
                        f"uneven slice gaps ({', '.join(f'{g:.2f}' for g in gaps)} mm): the gap of {gaps[k]:.2f} mm "
                        f"before this slice differs from the median {median:.2f} mm (a missing slice, or "
                        f"two stacks in one series)")  # fmt: skip
    return per_slice, median


def _affine(first: _Slice, last_position: np.ndarray, n_slices: int, gap: float) -> np.ndarray:
    """The NIfTI (RAS) voxel-to-world matrix of (i column, j row, k slice) from the DICOM (LPS) geometry."""
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    origin = np.asarray(first.position)
    step = (last_position - origin) / (n_slices - 1) if n_slices > 1 else first.normal * gap
    affine = np.eye(4)
    affine[:3, 0] = row * first.pixel_spacing[1]  # along a row: the column index (x)
    affine[:3, 1] = col * first.pixel_spacing[0]  # along a column: the row index (y)
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def _pixels(it: _Slice) -> np.ndarray:
    ds = it.load()
    try:
        data = ds.pixel_array
        slope = _optional_number(ds, "RescaleSlope") or 1.0
        intercept = _optional_number(ds, "RescaleIntercept") or 0.0
    except Exception as exc:  # missing decoder, truncated pixel data, a damaged element, ...
        raise DataError(it.name, f"cannot decode the pixel data ({type(exc).__name__}: {exc})") from None
    if data.shape != it.shape:
        raise DataError(it.name, f"pixel data of shape {data.shape} for Rows x Columns {it.shape}")
    return data.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _patient(it: _Slice) -> dict[str, Any]:
    """PatientID and PatientSex (text), PatientSize (m), PatientWeight (kg), HeartRate (bpm) and
    NominalInterval (the R-R interval, ms) where the header has usable values."""
    try:
        ds = it.load()
        found: dict[str, Any] = {k: str(ds.get(k, "") or "") for k in ("PatientID", "PatientSex")}
        found.update(
            {
                k: _optional_number(ds, k)
                for k in ("PatientSize", "PatientWeight", "HeartRate", "NominalInterval")
            }
        )
    except DataError:
        raise
    except Exception:  # a damaged optional element: the cine itself was read
        return {}
    return {k: v for k, v in found.items() if v not in (None, "") and v != 0}


def read_series(sources: Iterable[tuple[str, Path | bytes]], where: str | Path,
                series: str | None = None) -> DicomCine:  # fmt: skip
    """The cine among ``sources`` (``(name, path or bytes)`` of each file); ``where`` labels errors."""
    slices = read_headers(sources)
    items = choose_series(slices, where, series)
    per_slice, gap = stack(items)
    if len(per_slice[0]) < 2:
        raise DataError(where, f"{_describe(items[0].series, items)} is not a cine: one frame per slice")
    cine = np.stack([np.stack([_pixels(it) for it in files]) for files in per_slice], axis=1)
    bad = int(np.size(cine) - np.count_nonzero(np.isfinite(cine)))
    if bad:
        raise DataError(where, f"{bad} voxel(s) are NaN or infinite after rescaling")
    first = per_slice[0][0]
    last = np.asarray(per_slice[-1][0].position)
    affine = _affine(first, last, len(per_slice), gap)
    spacing = (gap, first.pixel_spacing[0], first.pixel_spacing[1])
    times = [it.trigger_time for it in per_slice[0]]
    frame_ms = None
    if all(t is not None for t in times) and len(times) > 1:
        frame_ms = float(np.mean(np.diff(np.asarray(times, dtype=np.float64))))
    patient = _patient(first)
    return DicomCine(Image(np.ascontiguousarray(cine, dtype=np.float32), spacing, affine), items[0].series,
                     first.description, frame_ms, len(items), patient,
                     tuple(tuple(files) for files in per_slice))  # fmt: skip


def read_dicom_dir(folder: Path | str, series: str | None = None) -> DicomCine:
    """The cine series in ``folder`` (a series or a study folder, searched recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "is not a folder of DICOM files")
    return read_series(((str(p), p) for p in series_files(folder)), folder, series)


def read_dicom_cine(folder: Path) -> Image:
    """:data:`pipeline.data.imageio.READERS`'s reader: the cine of a DICOM folder as an Image."""
    return read_dicom_dir(folder).image


# ---------------------------------------------------------------- writing (tests, demos)


def write_series(cine: np.ndarray, affine: np.ndarray, folder: Path | str, *, series_number: int = 1,
                 description: str = "SAX cine", frame_ms: float = 40.0, study_uid: str | None = None,
                 series_uid: str | None = None, patient_id: str = "anonymous", slope: float | None = None,
                 names: Callable[[int, int], str] | None = None,
                 headers: dict[str, Any] | None = None) -> list[Path]:  # fmt: skip
    """Write ``cine`` (T, Z, Y, X) with the NIfTI ``affine`` as single-frame MR Image Storage files.

    ``headers``: more elements by keyword for every file (``{"PatientSize": 1.72, "NominalInterval": 850}``).

    Intensities are stored as uint16 with RescaleSlope/RescaleIntercept chosen to span the data (or
    ``slope``); one file per (slice, frame), named by ``names(z, t)`` (default ``z{z:02d}_t{t:02d}.dcm``).
    Returns the files written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    cine = np.asarray(cine, dtype=np.float64)
    if cine.ndim == 3:
        cine = cine[None]
    t_count, z_count, rows, cols = cine.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    dx, dy = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    row_cos, col_cos = lps[:3, 0] / dx, lps[:3, 1] / dy
    low = float(cine.min())
    scale = slope if slope is not None else max(float(cine.max()) - low, 1e-6) / 4095.0
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    frame_uid = generate_uid()
    names = names or (lambda z, t: f"z{z:02d}_t{t:02d}.dcm")
    written = []
    for z in range(z_count):
        position = (lps @ np.array([0.0, 0.0, z, 1.0]))[:3]
        for t in range(t_count):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = UID(_MR_IMAGE_STORAGE)
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = _MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.PatientID, ds.PatientName = "MR", patient_id, patient_id
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
                study_uid,
                series_uid,
                frame_uid,
            )
            ds.SeriesNumber, ds.SeriesDescription = series_number, description
            ds.InstanceNumber = z * t_count + t + 1
            ds.TriggerTime = round(t * frame_ms, 3)
            ds.ImagePositionPatient = [round(float(v), 6) for v in position]
            ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_cos, *col_cos)]
            ds.PixelSpacing = [round(dy, 6), round(dx, 6)]
            ds.SliceThickness = round(float(np.linalg.norm(lps[:3, 2])), 6)
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = f"{scale:.10g}", f"{low:.10g}"
            stored = np.clip(np.rint((cine[t, z] - low) / float(f"{scale:.10g}")), 0, 65535).astype(np.uint16)
            ds.PixelData = stored.tobytes()
            for keyword, value in (headers or {}).items():
                setattr(ds, keyword, value)
            path = folder / names(z, t)
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
