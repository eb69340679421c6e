"""Fuzzing the data layer's readers: random bytes and random NIfTI headers, random Info.cfg text.

Nothing but our typed DataError may escape (a clean read is fine too): no struct.error, MemoryError,
numpy or nibabel exception leaks out of ``load_nifti`` or ``parse_info_cfg``.
"""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.acdc import load_nifti, parse_info_cfg
from pipeline.errors import DataError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_nifti_bytes() -> bytes:
    img = nib.Nifti1Image(np.arange(4 * 5 * 3 * 2, dtype=np.int16).reshape(4, 5, 3, 2), np.eye(4))
    return img.to_bytes()


VALID = _valid_nifti_bytes()


def _read(payload: bytes, suffix: str, ndim: int | tuple[int, ...] = (3, 4)) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(payload)
        try:
            data, affine, _ = load_nifti(path, ndim)
        except DataError as exc:
            assert str(exc).startswith(str(path)), exc  # the message names the file
            return
        assert data.ndim in (3, 4) and affine.shape == (4, 4)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([".nii", ".nii.gz"]))
def test_random_bytes_give_only_data_errors(payload: bytes, suffix: str) -> None:
    _read(payload, suffix)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_gzip_payloads_give_only_data_errors(payload: bytes) -> None:
    _read(gzip.compress(payload), ".nii.gz")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=12),
       st.sampled_from([".nii", ".nii.gz"]))  # fmt: skip
def test_mutated_headers_give_only_data_errors(edits: list[tuple[int, int]], suffix: str) -> None:
    blob = bytearray(VALID)
    for offset, value in edits:
        # Aim at the 348-byte header (dims, datatype, vox_offset, pixdim, scaling) most of the time.
        blob[offset % 348 if offset % 4 else offset] = value
    payload = bytes(blob)
    _read(gzip.compress(payload) if suffix == ".nii.gz" else payload, suffix)


@FUZZ
@given(
    st.integers(1, 2**15 - 1), st.integers(1, 2**15 - 1), st.integers(1, 2**15 - 1), st.integers(1, 2**15 - 1)
)
def test_headers_declaring_huge_images_give_data_errors(x: int, y: int, z: int, t: int) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((x, y, z, t))
    header.set_data_dtype(np.float32)
    buffer = io.BytesIO()
    header.write_to(buffer)
    payload = buffer.getvalue() + b"\0" * 4 + b"\1" * 256  # far less data than declared (unless tiny)
    _read(payload, ".nii")


@FUZZ
@given(st.text(max_size=400))
def test_random_info_cfg_text_gives_only_data_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Info.cfg"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            info = parse_info_cfg(path)
        except DataError as exc:
            assert str(exc).startswith(str(path)), exc
            return
        assert 1 <= info.ed <= info.nb_frames and 1 <= info.es <= info.nb_frames


@FUZZ
@given(st.binary(max_size=400))
def test_random_info_cfg_bytes_give_only_data_errors(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Info.cfg"
        path.write_bytes(payload)
        try:
            parse_info_cfg(path)
        except DataError as exc:
            assert str(exc).startswith(str(path)), exc


@FUZZ
@given(st.dictionaries(st.sampled_from(["ED", "ES", "Group", "Height", "NbFrame", "Weight"]),
                       st.one_of(st.integers(-5, 100).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=8)),
                       min_size=3))  # fmt: skip
def test_info_cfg_with_random_values(values: dict[str, str]) -> None:
    text = "\n".join(f"{k}: {v}" for k, v in values.items())
    test_random_info_cfg_text_gives_only_data_errors.hypothesis.inner_test(text)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- DICOM series


def _valid_series() -> list[tuple[str, bytes]]:
    from pipeline.data.acdc import affine_from_spacing
    from pipeline.data.dicom import write_series

    cine = np.arange(3 * 2 * 6 * 5, dtype=np.float32).reshape(3, 2, 6, 5)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_series(cine, affine_from_spacing((8.0, 1.5, 1.25)), Path(tmp))
        return [(p.name, p.read_bytes()) for p in files]


SERIES = _valid_series()
#: Offsets the fuzz may change: past the preamble, inside every file (their lengths differ by a few bytes,
#: with the lengths of their UIDs and numbers).
LAST_BYTE = min(len(data) for _, data in SERIES) - 1


@FUZZ
@given(st.integers(0, len(SERIES) - 1),
       st.lists(st.tuples(st.integers(132, LAST_BYTE), st.integers(0, 255)), min_size=1, max_size=12))  # fmt: skip
def test_mutated_dicom_files_give_only_data_errors(which: int, edits: list[tuple[int, int]]) -> None:
    """Random bytes changed after the DICM preamble of one file of a 6-file series: the series reads,
    or a DataError names a file of it (the changed one, or one its changed position now clashes with) or
    the series; nothing else escapes."""
    from pipeline.data.dicom import read_series

    members = list(SERIES)
    name, data = members[which]
    payload = bytearray(data)
    for offset, value in edits:
        payload[offset] = value
    members[which] = (name, bytes(payload))
    try:
        image = read_series(members, "series").image
    except DataError as exc:
        assert str(exc).startswith((*(n for n, _ in members), "series")), exc
        return
    assert image.array.ndim == 4 and image.affine.shape == (4, 4)
