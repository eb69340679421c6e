"""Image I/O: the one place where image files and bytes become arrays in the memory convention and back.

On disk (and on the wire) NIfTI stores ``(X, Y, Z[, T])`` with zooms ``(x, y, z[, t])``; in memory a cine
is ``(T, Z, Y, X)`` float32 and a label volume ``(Z, Y, X)`` uint8, with ``spacing = (z, y, x)`` in mm.
The transpose, the spacing reversal, the size, finiteness and voxel-size checks and the writers live
here only; the ACDC layout (:mod:`pipeline.data.acdc`) reads files through :func:`load_nifti` and
:mod:`pipeline.data.image_bytes` decodes request bytes through :func:`nifti_from_bytes`.

Readers are registered by format in :data:`READERS` (``read(path) -> Image``): NIfTI files here, DICOM
series folders in :mod:`pipeline.data.dicom`; :func:`read_image` picks one by the input's kind.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.data.image import Image
from pipeline.errors import DataError, RequestError

#: Largest image a file header may declare: a 4D cine at 512x512x40x60 float32 is 2.3 GiB.
MAX_NIFTI_BYTES = 8 * 2**30
#: Default cap on a decoded in-memory NIfTI (bytes) and on the voxel data it declares.
DEFAULT_MAX_IMAGE_BYTES = 512 * 1024 * 1024
NIFTI_SUFFIXES = (".nii.gz", ".nii")


# ---------------------------------------------------------------- the convention


def to_memory(data: np.ndarray) -> np.ndarray:
    """(X, Y, Z[, T]) as stored -> (Z, Y, X) or (T, Z, Y, X) in memory, C-contiguous."""
    return np.ascontiguousarray(np.transpose(data, tuple(reversed(range(data.ndim)))))


def to_disk(data: np.ndarray) -> np.ndarray:
    """(Z, Y, X) or (T, Z, Y, X) in memory -> (X, Y, Z[, T]) as stored (a view)."""
    return np.transpose(data, tuple(reversed(range(data.ndim))))


def spacing_zyx(zooms: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """The (z, y, x) spacing in mm from NIfTI zooms (x, y, z[, t]); ValueError unless positive and finite."""
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"voxel spacing must be positive and finite, got (z, y, x) = {spacing} mm")
    return spacing


def count_nonfinite(data: np.ndarray) -> int:
    """How many voxels are NaN or infinite (0 for integer data)."""
    if not np.issubdtype(data.dtype, np.floating):
        return 0
    return int(np.size(data) - np.count_nonzero(np.isfinite(data)))


# ---------------------------------------------------------------- NIfTI files


def load_nifti(path: Path, ndim: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Load a NIfTI file fully, as stored (X, Y, Z[, T]).

    Returns the array, the 4x4 affine and the header zooms (mm, and the time step for 4D).
    Raises DataError for a missing, truncated or non-NIfTI file and for the wrong number of dimensions.
    """
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if not path.is_file():
        raise DataError(path, "is not a regular file (a folder?)" if path.exists() else "file is missing")
    try:
        img: Any = nib.load(str(path))
        _check_declared_size(path, img)
        data = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except (EOFError, zlib.error) as exc:
        raise DataError(path, f"cannot read NIfTI (truncated or corrupt gzip stream: {exc})") from None
    except Exception as exc:
        raise DataError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    # A trailing singleton time axis is common in 3D files written by other tools.
    while data.ndim > max(ndims) and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in ndims:
        want = " or ".join(f"{n}D" for n in ndims)
        raise DataError(path, f"expected a {want} image, got {data.ndim}D shape {tuple(data.shape)}")
    zooms = tuple(float(z) for z in img.header.get_zooms())
    return data, np.asarray(img.affine, dtype=np.float64), zooms


def _check_declared_size(path: Path, img: Any) -> None:
    """Refuse a header that declares more data than any cine has (a corrupt or hostile file) before
    anything is allocated, and an uncompressed file shorter than its header says."""
    shape = tuple(int(n) for n in img.header.get_data_shape())
    nbytes = math.prod(shape) * img.header.get_data_dtype().itemsize
    if nbytes > MAX_NIFTI_BYTES:
        raise DataError(path, f"header declares a {shape} image of {nbytes / 2**30:.1f} GiB, more than the "
                              f"{MAX_NIFTI_BYTES / 2**30:.0f} GiB limit (corrupt header?)")  # fmt: skip
    if not path.name.endswith(".gz"):
        expected = int(img.header.get_data_offset()) + nbytes
        if path.stat().st_size < expected:
            raise DataError(
                path, f"truncated: the header declares {expected} bytes, the file has {path.stat().st_size}"
            )


def read_nifti_cine(path: Path) -> Image:
    """A 4D (or 3D: one frame) NIfTI file as a finite float32 cine (T, Z, Y, X); DataError naming it."""
    data, affine, zooms = load_nifti(Path(path), (3, 4))
    bad = count_nonfinite(data)
    if bad:
        raise DataError(path, f"{bad} voxel(s) are NaN or infinite")
    try:
        spacing = spacing_zyx(zooms)
    except ValueError as exc:
        raise DataError(path, str(exc)) from None
    if data.ndim == 3:
        data = data[..., np.newaxis]
    return Image(to_memory(data.astype(np.float32, copy=False)), spacing, affine)


def nifti_image(data: np.ndarray, affine: np.ndarray, zooms_t: float | None = None) -> Any:
    """A NIfTI-1 image of ``data`` in the memory convention (stored transposed), units mm and s."""
    img = nib.Nifti1Image(to_disk(data), affine)
    img.header.set_xyzt_units("mm", "sec")
    if zooms_t is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = zooms_t
        img.header.set_zooms(zooms)
    return img


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, zooms_t: float | None = None) -> None:
    """Write ``data`` (memory convention) to ``path`` (.nii.gz: gzip without time stamp or name)."""
    nib.save(nifti_image(data, affine, zooms_t), str(path))


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzip NIfTI bytes of ``data`` (memory convention), deterministic (mtime 0)."""
    return gzip.compress(nifti_image(data, affine).to_bytes(), compresslevel=6, mtime=0)


# ---------------------------------------------------------------- NIfTI bytes (requests)


def _image_from_bytes(raw: bytes) -> Any:
    errors = []
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return cls.from_bytes(raw)
        except Exception as exc:  # nibabel raises several types for foreign bytes
            errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
    raise RequestError(f"not a NIfTI-1/2 image ({errors[0]})")


def nifti_from_bytes(raw: bytes, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Image:
    """Decode uncompressed single-file NIfTI bytes into a float32 cine (T, Z, Y, X) (3D: T = 1).

    Raises:
        RequestError: not NIfTI, not 3D/4D, an empty axis, non-numeric, larger than ``max_image_bytes``,
            a truncated data block, NaN/inf voxels, or a non-positive voxel size.
    """
    img = _image_from_bytes(raw)
    shape = tuple(int(s) for s in img.shape)
    # Trailing singleton axes beyond 4 (e.g. (X, Y, Z, T, 1)) carry nothing: drop them.
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (3, 4):
        raise RequestError(
            f"expected a 3D (X, Y, Z) or 4D (X, Y, Z, T) image, got {len(shape)}D shape {shape}"
        )
    if min(shape) < 1:
        raise RequestError(f"image has an empty axis, shape {shape}")
    dtype = img.get_data_dtype()
    if dtype.kind not in "iuf":
        raise RequestError(f"voxel type {dtype} is not a real number type")
    declared = math.prod(shape) * max(dtype.itemsize, 4)
    if declared > max_image_bytes:
        raise RequestError(
            f"image of shape {shape} needs {declared} bytes, over the limit of {max_image_bytes}"
        )
    try:
        array = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:  # truncated data block, bad offsets, ...
        reason = " ".join(str(exc).split())[:160]
        raise RequestError(f"cannot read the voxel data ({type(exc).__name__}: {reason})") from None
    bad = count_nonfinite(array)
    if bad:
        raise RequestError(f"{bad} voxel(s) are NaN or infinite")
    try:
        spacing = spacing_zyx(img.header.get_zooms()[:3])
    except ValueError:
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        raise RequestError(f"voxel size must be positive and finite, got {zooms} mm") from None
    if array.ndim == 3:
        array = array[..., np.newaxis]
    return Image(to_memory(array), spacing, np.asarray(img.affine, dtype=np.float64))


# ---------------------------------------------------------------- readers by kind of input


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES)


def _is_dicom_dir(path: Path) -> bool:
    from pipeline.data.dicom import is_dicom_dir  # pydicom and the DICOM code load only when needed

    return is_dicom_dir(path)


def _read_dicom(path: Path) -> Image:
    from pipeline.data.dicom import read_dicom_cine

    return read_dicom_cine(path)


#: format name -> (recognises the input, reads it as a cine).
READERS: dict[str, tuple[Callable[[Path], bool], Callable[[Path], Image]]] = {
    "nifti": (_is_nifti, read_nifti_cine),
    "dicom": (_is_dicom_dir, _read_dicom),
}


def read_image(path: Path | str) -> Image:
    """Read ``path`` with the first reader of :data:`READERS` that recognises it; DataError otherwise."""
    path = Path(path)
    for recognises, read in READERS.values():
        if recognises(path):
            return read(path)
    if not path.exists():
        raise DataError(path, "input is missing")
    raise DataError(
        path,
        f"not a known image kind (readers: {', '.join(READERS)}; NIfTI is .nii or .nii.gz, "
        "DICOM a folder of a series' files)",
    )
