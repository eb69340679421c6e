"""Request bytes: gzip (capped, so a small gzip bomb cannot exhaust memory) around NIfTI, and a zip of
one DICOM series, in memory only.

The NIfTI <-> memory-convention conversion itself and its checks are :mod:`pipeline.data.imageio`'s and
the DICOM series reading :mod:`pipeline.data.dicom`'s; this module only handles the bytes around them.
A zip's limits (size, member count, names, compression ratio) are checked from its central directory
before a member is decompressed, and every member is then read with a cap, since a header may lie.
Every failure is a :class:`~pipeline.errors.RequestError` with one readable sentence; nothing here touches
the filesystem. The limits a request's bytes are held to (size, decompression, zip members) live here too.
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from pipeline.data import imageio
from pipeline.data.imageio import DEFAULT_MAX_IMAGE_BYTES
from pipeline.errors import RequestError

__all__ = [
    "decode_dicom_zip",
    "decode_nifti",
    "encode_cine",
    "encode_labels",
    "gunzip_capped",
]

#: Default cap on one decoded request (bytes, before gunzip or unzip) when model_config has none.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: The decompressed image (or the zip's members together) may be this many times larger than the request.
DECOMPRESSION_FACTOR = 16
#: Most members a DICOM zip may hold (a 60-frame, 30-slice cine is 1,800 files).
MAX_ZIP_MEMBERS = 10_000

GZIP_MAGIC = b"\x1f\x8b"
#: A member whose declared size is more than this many times its compressed size is a zip bomb (DICOM
#: images compress 2-10x; a bomb, thousands of times).
MAX_ZIP_RATIO = 200


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


def _unsafe_member_name(name: str) -> str | None:
    """Why a member name may not be used (zip-slip: absolute, drive or ``..``), or None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component (zip-slip)"
    return None


def zip_members(
    data: bytes, *, max_members: int = MAX_ZIP_MEMBERS, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> list[tuple[str, bytes]]:
    """The regular files of a zip archive as ``(name, bytes)``, refusing unsafe or oversized archives.

    Raises:
        RequestError: not a zip; more than ``max_members`` entries; a member name that is absolute or has
            ``..`` (zip-slip); a link, an encrypted member; members declaring (or, read, holding) more than
            ``max_bytes`` together, or compressed over :data:`MAX_ZIP_RATIO` times (a zip bomb).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise RequestError(f"not a zip archive ({exc})") from None
    infos = archive.infolist()
    if len(infos) > max_members:
        raise RequestError(f"zip holds {len(infos)} members, more than the limit of {max_members}")
    declared = 0
    for info in infos:
        why = _unsafe_member_name(info.filename)
        if why:
            raise RequestError(f"zip member {info.filename!r} has {why}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise RequestError(f"zip member {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise RequestError(f"zip member {info.filename!r} is encrypted")
        if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) and info.file_size > 1024 * 1024:
            raise RequestError(f"zip member {info.filename!r} expands {info.file_size} bytes from "
                               f"{info.compress_size} (a zip bomb?)")  # fmt: skip
        declared += info.file_size
    if declared > max_bytes:
        raise RequestError(f"zip members declare {declared} bytes, more than the limit of {max_bytes}")
    members, total = [], 0
    for info in infos:
        if info.is_dir():
            continue
        try:
            with archive.open(info) as fh:
                content = fh.read(max_bytes - total + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, zlib.error) as exc:
            raise RequestError(f"zip member {info.filename!r} cannot be read ({exc})") from None
        total += len(content)
        if total > max_bytes:
            raise RequestError(f"zip members hold more than the limit of {max_bytes} bytes")
        members.append((info.filename, content))
    return members


def decode_dicom_zip(
    data: bytes, *, max_members: int = MAX_ZIP_MEMBERS, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The cine of a zip of one DICOM series (or of one study), like :func:`decode_nifti`'s result.

    Hidden members, ``DICOMDIR`` and folders are skipped; the series is read by
    :func:`pipeline.data.dicom.read_series` (the cine series of a study is picked).

    Raises:
        RequestError: an unsafe or oversized zip (see :func:`zip_members`), or no readable cine in it
            (the message names the member and the problem).
    """
    from pipeline.data.dicom import ignored_name, read_series
    from pipeline.errors import DataError

    members = [
        (name, content) for name, content in zip_members(data, max_members=max_members, max_bytes=max_bytes)
        if not ignored_name(PurePosixPath(name).name) and "__MACOSX" not in PurePosixPath(name).parts
    ]  # fmt: skip
    try:
        image = read_series(members, "zip").image
    except DataError as exc:
        raise RequestError(f"DICOM {exc}") from None
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
