"""NIfTI bytes <-> arrays in the pipeline's memory convention, entirely in memory.

On disk (and on the wire) a cine is NIfTI ``(X, Y, Z, T)``; in memory it is ``(T, Z, Y, X)`` float32 with
``spacing = (z, y, x)`` in mm (see :mod:`pipeline.data.acdc`). Decoding checks everything a client can get
wrong and raises :class:`RequestError` with one readable sentence; it never touches the filesystem and
caps the decompressed size so a small gzip bomb cannot exhaust memory.
"""

from __future__ import annotations

import gzip
import math
import zlib
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.errors import RequestError

__all__ = ["RequestError", "decode_nifti", "encode_cine", "encode_labels", "gunzip_capped"]

GZIP_MAGIC = b"\x1f\x8b"
#: Default cap on the decompressed NIfTI size (bytes) and on the voxel data it declares.
DEFAULT_MAX_IMAGE_BYTES = 512 * 1024 * 1024


def gunzip_capped(data: bytes, max_bytes: int) -> bytes:
    """Decompress a (possibly multi-member) gzip stream, refusing output larger than ``max_bytes``."""
    out = bytearray()
    rest = data
    while rest:
        dec = zlib.decompressobj(wbits=31)
        try:
            out += dec.decompress(rest, max_bytes - len(out) + 1)
        except zlib.error as exc:
            raise RequestError(f"corrupt gzip stream ({exc})") from None
        if len(out) > max_bytes or dec.unconsumed_tail:
            raise RequestError(f"decompressed image is larger than the limit of {max_bytes} bytes")
        if not dec.eof:
            raise RequestError("truncated gzip stream")
        rest = dec.unused_data
        if rest and not rest.startswith(GZIP_MAGIC):
            break  # trailing garbage after the last member: ignore it, like gzip(1)
    return bytes(out)


def _image_from_bytes(raw: bytes) -> Any:
    errors = []
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return cls.from_bytes(raw)
        except Exception as exc:  # nibabel raises several types for foreign bytes
            errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
    raise RequestError(f"not a NIfTI-1/2 image ({errors[0]})")


def decode_nifti(
    data: bytes, *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Decode a single-file NIfTI (``.nii`` or ``.nii.gz`` bytes) into the memory convention.

    Args:
        data: the file's bytes, gzip-compressed or not (detected from the gzip magic number).
        max_image_bytes: cap on the decompressed size and on the voxel data the header declares.

    Returns:
        ``(cine, spacing, affine)``: cine ``(T, Z, Y, X)`` float32 (a 3D image becomes ``T = 1``),
        spacing ``(z, y, x)`` in mm, affine the 4x4 voxel-to-world matrix (float64).

    Raises:
        RequestError: not NIfTI, truncated, too large, not 3D/4D, non-numeric, NaN/inf voxels, or a
            non-positive voxel size.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RequestError(f"expected NIfTI bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise RequestError("empty image")
    if data[:2] == GZIP_MAGIC:
        data = gunzip_capped(data, max_image_bytes)
    elif len(data) > max_image_bytes:
        raise RequestError(f"image is larger than the limit of {max_image_bytes} bytes")
    img = _image_from_bytes(data)
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
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise RequestError(f"{bad} voxel(s) are NaN or infinite")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if not all(math.isfinite(z) and z > 0 for z in zooms):
        raise RequestError(f"voxel size must be positive and finite, got {tuple(zooms)} mm")
    if array.ndim == 3:
        array = array[..., np.newaxis]
    cine = np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0)))
    spacing = (zooms[2], zooms[1], zooms[0])
    return cine, spacing, np.asarray(img.affine, dtype=np.float64)


def encode_labels(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzip NIfTI bytes of a ``(T, Z, Y, X)`` uint8 label cine, stored ``(X, Y, Z, T)`` with ``affine``."""
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"labels must be (T, Z, Y, X), got shape {labels.shape}")
    img = nib.Nifti1Image(np.transpose(labels.astype(np.uint8, copy=False), (3, 2, 1, 0)), affine)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm", "sec")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def encode_cine(cine: np.ndarray, affine: np.ndarray, *, dtype: Any = np.float32) -> bytes:
    """Gzip NIfTI bytes of a ``(T, Z, Y, X)`` cine (the inverse of :func:`decode_nifti`; for clients/tests)."""
    cine = np.asarray(cine)
    if cine.ndim not in (3, 4):
        raise ValueError(f"cine must be (T, Z, Y, X) or (Z, Y, X), got shape {cine.shape}")
    disk = np.transpose(cine, tuple(reversed(range(cine.ndim)))).astype(dtype)
    img = nib.Nifti1Image(disk, affine)
    img.header.set_xyzt_units("mm", "sec")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
