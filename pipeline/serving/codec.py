"""Request bytes: gzip (capped, so a small gzip bomb cannot exhaust memory) around NIfTI, in memory only.

The NIfTI <-> memory-convention conversion itself and its checks are :mod:`pipeline.data.imageio`'s;
this module only handles the bytes around it. Every failure is a :class:`RequestError` with one readable
sentence; nothing here touches the filesystem.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from pipeline.data import imageio
from pipeline.data.imageio import DEFAULT_MAX_IMAGE_BYTES
from pipeline.errors import RequestError

__all__ = ["RequestError", "decode_nifti", "encode_cine", "encode_labels", "gunzip_capped"]

GZIP_MAGIC = b"\x1f\x8b"


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
            non-positive voxel size (see :func:`pipeline.data.imageio.nifti_from_bytes`).
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
    image = imageio.nifti_from_bytes(data, max_image_bytes)
    return image.array, image.spacing, image.affine


def encode_labels(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzip NIfTI bytes of a ``(T, Z, Y, X)`` uint8 label cine, stored ``(X, Y, Z, T)`` with ``affine``."""
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"labels must be (T, Z, Y, X), got shape {labels.shape}")
    return imageio.nifti_gz_bytes(labels.astype(np.uint8, copy=False), affine)


def encode_cine(cine: np.ndarray, affine: np.ndarray, *, dtype: Any = np.float32) -> bytes:
    """Gzip NIfTI bytes of a ``(T, Z, Y, X)`` cine (the inverse of :func:`decode_nifti`; for clients/tests)."""
    cine = np.asarray(cine)
    if cine.ndim not in (3, 4):
        raise ValueError(f"cine must be (T, Z, Y, X) or (Z, Y, X), got shape {cine.shape}")
    return imageio.nifti_gz_bytes(cine.astype(dtype), affine)
