"""Read and write one patient in the ACDC folder layout.

The layout (ACDC training set, and the project's synthetic phantom)::

    patientNNN/Info.cfg                         ED, ES (1-based), Group, Height, Weight, NbFrame
    patientNNN/patientNNN_4d.nii.gz             the cine, NIfTI (X, Y, Z, T)
    patientNNN/patientNNN_frameXX.nii.gz        the ED and ES frames, (X, Y, Z)
    patientNNN/patientNNN_frameXX_gt.nii.gz     labels at ED and ES: 0 bg, 1 RV, 2 MYO, 3 LV
    patientNNN/patientNNN_4d_gt.nii.gz          optional: labels of every frame (X, Y, Z, T)

In memory a cine is ``(T, Z, Y, X)`` float32 and a label volume ``(Z, Y, X)`` uint8, with
``spacing = (z, y, x)`` in mm; the conversion from and to NIfTI is :mod:`pipeline.data.imageio`'s. Every
reader check raises :class:`~pipeline.errors.DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_directory
from pipeline.data.imageio import count_nonfinite, load_nifti, save_nifti, spacing_zyx, to_memory
from pipeline.errors import DataError
from pipeline.vocabulary import LABELS, PHASES

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
UNKNOWN_GROUP = "UNKNOWN"

_REQUIRED_INFO_KEYS = ("ED", "ES", "NbFrame")


@dataclass(frozen=True)
class PatientInfo:
    """The content of ``Info.cfg``. ``ed`` and ``es`` are 1-based frame numbers, as in the file."""

    ed: int
    es: int
    nb_frames: int
    group: str = UNKNOWN_GROUP
    height_cm: float = math.nan
    weight_kg: float = math.nan

    def frame(self, phase: str) -> int:
        """1-based frame number of ``phase`` ('ED' or 'ES')."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        return self.ed if phase == "ED" else self.es


@dataclass(frozen=True, eq=False)
class PatientRecord:
    """One patient in memory.

    Attributes:
        patient_id: folder name, e.g. ``patient001``.
        cine: (T, Z, Y, X) float32 intensities.
        spacing: (z, y, x) voxel size in mm.
        affine: 4x4 voxel-to-world matrix of the NIfTI files (kept so files can be written back).
        info: Info.cfg content (ED/ES 1-based).
        labels: phase ('ED', 'ES') -> (Z, Y, X) uint8 label volume.
        cine_labels: optional (T, Z, Y, X) uint8 labels of every frame (synthetic phantom only).
    """

    patient_id: str
    cine: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    info: PatientInfo
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    cine_labels: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.cine.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.cine.shape[1])

    def frame_index(self, phase: str) -> int:
        """0-based index into ``cine`` of the ED or ES frame."""
        return self.info.frame(phase) - 1


# ---------------------------------------------------------------- Info.cfg


def parse_info_cfg(path: Path) -> PatientInfo:
    """Parse an ACDC ``Info.cfg`` (``Key: value`` lines) and check ED/ES against NbFrame."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(path, "Info.cfg is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read Info.cfg ({exc})") from None
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(path, f"line {lineno} is not 'Key: value': {line.strip()[:60]!r}")
        values[key.strip()] = value.strip()
    missing = [k for k in _REQUIRED_INFO_KEYS if k not in values]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(missing)} (needs {', '.join(_REQUIRED_INFO_KEYS)})")

    def as_int(key: str) -> int:
        try:
            number = float(values[key])
        except ValueError:
            raise DataError(path, f"{key} must be an integer, got {values[key]!r}") from None
        if not number.is_integer():
            raise DataError(path, f"{key} must be an integer, got {values[key]!r}")
        return int(number)

    def as_float(key: str) -> float:
        if key not in values:
            return math.nan
        try:
            return float(values[key])
        except ValueError:
            raise DataError(path, f"{key} must be a number, got {values[key]!r}") from None

    ed, es, nb = as_int("ED"), as_int("ES"), as_int("NbFrame")
    if nb < 1:
        raise DataError(path, f"NbFrame must be >= 1, got {nb}")
    for key, frame in (("ED", ed), ("ES", es)):
        if not 1 <= frame <= nb:
            raise DataError(path, f"{key} = {frame} is outside 1..NbFrame = {nb} (frames are 1-based)")
    group = values.get("Group", UNKNOWN_GROUP) or UNKNOWN_GROUP
    return PatientInfo(ed, es, nb, group, as_float("Height"), as_float("Weight"))


def format_info_cfg(info: PatientInfo) -> str:
    """The text of an Info.cfg in ACDC's key order."""
    return (
        f"ED: {info.ed}\nES: {info.es}\nGroup: {info.group}\nHeight: {info.height_cm:.1f}\n"
        f"NbFrame: {info.nb_frames}\nWeight: {info.weight_kg:.1f}\n"
    )


# ---------------------------------------------------------------- NIfTI


def _check_finite(path: Path, data: np.ndarray) -> None:
    bad = count_nonfinite(data)
    if bad:
        raise DataError(path, f"{bad} voxel(s) are NaN or infinite")


def _as_labels(path: Path, data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        _check_finite(path, data)
        if not np.array_equal(data, np.round(data)):
            raise DataError(path, "label values must be integers, found non-integer values")
    values = np.unique(data)
    bad = [v for v in values.tolist() if v not in LABELS]
    if bad:
        raise DataError(path, f"label values must be in {{0, 1, 2, 3}}, found {sorted(bad)[:10]}")
    return data.astype(np.uint8)


def patient_files(folder: Path, patient_id: str, info: PatientInfo) -> dict[str, Path]:
    """Paths of the files of the ACDC layout for this patient."""
    files = {"info": folder / "Info.cfg", "cine": folder / f"{patient_id}_4d.nii.gz"}
    for phase in PHASES:
        stem = f"{patient_id}_frame{info.frame(phase):02d}"
        files[f"{phase}_image"] = folder / f"{stem}.nii.gz"
        files[f"{phase}_gt"] = folder / f"{stem}_gt.nii.gz"
    files["cine_gt"] = folder / f"{patient_id}_4d_gt.nii.gz"
    return files


def read_patient(folder: Path | str, *, with_cine_labels: bool = True) -> PatientRecord:
    """Read one ACDC patient folder into a :class:`PatientRecord`, checking every file.

    Checks: Info.cfg keys and ED/ES range; the cine is 4D with NbFrame frames and finite values; each
    ED/ES frame and its ground truth exist, are 3D, have the cine's (X, Y, Z) shape; labels are in 0..3.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "patient folder is missing")
    patient_id = folder.name
    info = parse_info_cfg(folder / "Info.cfg")
    files = patient_files(folder, patient_id, info)
    for key, path in files.items():
        if key != "cine_gt" and not path.is_file():
            if path.exists():
                raise DataError(path, "is not a regular file (a folder?); cannot read it")
            raise DataError(path, f"file is missing (patient folder {folder} is incomplete)")

    raw, affine, zooms = load_nifti(files["cine"], 4)
    _check_finite(files["cine"], raw)
    if raw.shape[3] != info.nb_frames:
        raise DataError(
            files["cine"], f"has {raw.shape[3]} frames but Info.cfg says NbFrame = {info.nb_frames}"
        )
    volume_shape = raw.shape[:3]
    try:
        spacing = spacing_zyx(zooms)
    except ValueError as exc:
        raise DataError(files["cine"], str(exc)) from None

    labels: dict[str, np.ndarray] = {}
    for phase in PHASES:
        for kind in ("image", "gt"):
            path = files[f"{phase}_{kind}"]
            data, _, _ = load_nifti(path, 3)
            if data.shape != volume_shape:
                raise DataError(
                    path,
                    f"shape {tuple(data.shape)} differs from the cine's frame shape {tuple(volume_shape)}",
                )
            if kind == "image":
                _check_finite(path, data)
            else:
                labels[phase] = to_memory(_as_labels(path, data))

    cine_labels = None
    if with_cine_labels and files["cine_gt"].is_file():
        data, _, _ = load_nifti(files["cine_gt"], 4)
        if data.shape != raw.shape:
            raise DataError(
                files["cine_gt"], f"shape {tuple(data.shape)} differs from the cine's {tuple(raw.shape)}"
            )
        cine_labels = to_memory(_as_labels(files["cine_gt"], data))

    return PatientRecord(
        patient_id=patient_id,
        cine=to_memory(raw.astype(np.float32, copy=False)),
        spacing=spacing,
        affine=affine,
        info=info,
        labels=labels,
        cine_labels=cine_labels,
    )


def affine_from_spacing(
    spacing: tuple[float, float, float], rotation: np.ndarray | None = None
) -> np.ndarray:
    """A voxel-to-world affine with the (z, y, x) spacing in mm and an optional 3x3 rotation."""
    affine = np.eye(4)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    affine[:3, :3] = rot @ np.diag([spacing[2], spacing[1], spacing[0]])
    return affine


def write_patient(record: PatientRecord, root: Path | str, *, intensity_dtype: type = np.int16) -> Path:
    """Write ``record`` as ``root/<patient_id>/`` in the ACDC layout, atomically.

    The folder is written into a temporary sibling and renamed into place, so a crash never leaves a
    half-written patient. Intensities are stored as ``intensity_dtype`` (ACDC uses int16).
    """
    final = Path(root) / record.patient_id
    with atomic_directory(final) as tmp:
        files = patient_files(tmp, record.patient_id, record.info)
        files["info"].write_text(format_info_cfg(record.info))
        cine = record.cine
        if np.issubdtype(np.dtype(intensity_dtype), np.integer):
            cine = np.round(cine)
        cine = cine.astype(intensity_dtype)
        save_nifti(cine, record.affine, files["cine"], zooms_t=1.0)
        for phase in PHASES:
            t = record.frame_index(phase)
            save_nifti(cine[t], record.affine, files[f"{phase}_image"])
            if phase in record.labels:
                save_nifti(record.labels[phase].astype(np.uint8), record.affine, files[f"{phase}_gt"])
        if record.cine_labels is not None:
            save_nifti(record.cine_labels.astype(np.uint8), record.affine, files["cine_gt"], zooms_t=1.0)
    return final


def list_patients(root: Path | str) -> list[Path]:
    """Patient folders (``patient*``) directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder is missing")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))
    if not folders:
        raise DataError(root, "contains no patient* folders (expected the ACDC layout)")
    return folders
